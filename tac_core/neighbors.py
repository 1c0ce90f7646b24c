"""Exact cosine nearest neighbours in row chunks, so 200k points never need an n×n matrix."""
from __future__ import annotations

import numpy as np
import torch

CHUNK_ROWS = 4096


def cosine_knn(x: np.ndarray | torch.Tensor, k: int, exclude_self: bool = True,
               device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Indices and similarities of each row's ``k`` most similar rows (unit-norm input), best first.

    ``k`` is clipped to the number of available neighbours, so tiny collections still work.
    """
    x = torch.as_tensor(np.asarray(x, dtype=np.float32)).to(device)
    n = x.shape[0]
    k = max(0, min(k, n - 1 if exclude_self else n))
    indices = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    if k == 0:
        return indices, sims
    for start in range(0, n, CHUNK_ROWS):
        block = x[start:start + CHUNK_ROWS] @ x.T
        if exclude_self:
            rows = torch.arange(block.shape[0], device=block.device)
            block[rows, rows + start] = -torch.inf
        top = block.topk(k, dim=1)
        indices[start:start + block.shape[0]] = top.indices.cpu().numpy()
        sims[start:start + block.shape[0]] = top.values.cpu().numpy()
    return indices, sims
