"""Small numeric helpers shared by the clustering steps."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import numpy as np
import torch

from .errors import InvalidInputError

_flush_depth = threading.local()


CHUNK_ROWS = 16384
UNIT_TOLERANCE = 1e-5


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1, eps=1e-12)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when its rows are already unit length (within 1e-5), else a normalised copy.

    Spares a copy of the data (800 MB for 200,000 × 1024) when the caller already normalised it; callers
    never write into the result.
    """
    norms = torch.linalg.vector_norm(x, dim=1)
    if len(norms) and float((norms - 1).abs().max()) <= UNIT_TOLERANCE:
        return x
    return normalize_rows(x)


def unit_rows_array(a: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length; all-zero rows stay zero."""
    a = np.asarray(a, dtype=np.float32)
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norms > 0, norms, 1)


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats as zero on the CPU while inside the block.

    TAC's sharp softmax (τ = 0.005) and k-means++ weights produce many subnormal numbers; x86 CPUs handle
    those ~10x slower, which made counterparts take 7 s instead of 0.5 s for 50k images. The effect on
    results is below float32 resolution of any value we keep.
    """
    depth = getattr(_flush_depth, "value", 0)
    if depth == 0:
        torch.set_flush_denormal(True)
    _flush_depth.value = depth + 1
    try:
        yield
    finally:
        _flush_depth.value = depth
        if depth == 0:
            torch.set_flush_denormal(False)  # torch's default; torch offers no getter to restore another


def cluster_sums(features: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """(K, d) float64 sum of each cluster's rows; an empty cluster gets a zero row.

    Summed in float64, in row chunks: converting all of 200,000 × 1024 at once would take 1.6 GB.
    """
    sums = torch.zeros((n_clusters, features.shape[1]), dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    for start in range(0, len(labels), CHUNK_ROWS):
        chunk = torch.as_tensor(features[start:start + CHUNK_ROWS])
        sums.index_add_(0, labels[start:start + CHUNK_ROWS], chunk.double())
    return sums.numpy()


def cluster_unit_means(features: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """(K, d) normalised mean of each cluster's rows; an empty cluster gets a zero row."""
    sums = torch.as_tensor(cluster_sums(features, labels, n_clusters))
    norms = sums.norm(dim=1, keepdim=True)
    return (sums / torch.where(norms > 0, norms, torch.ones_like(norms))).float().numpy()


@contextlib.contextmanager
def single_cpu_thread(device: torch.device | str) -> Iterator[None]:
    """Run small-tensor work (the cluster heads) on one CPU thread.

    Measured on a 2-core machine with other work running: a 512×512 head step took 13 ms on one thread
    and 130 ms on two, because OpenMP threads spin-wait for a descheduled sibling. Big matrix products
    (k-means) keep all threads.
    """
    if torch.device(device).type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def validated_unit_rows(name: str, array) -> np.ndarray:
    """``array`` as float32 unit rows, refused with a message naming ``name`` when empty, non-finite or zero."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise InvalidInputError(f"{name} must be a non-empty 2-D array (rows × dimensions); got shape {a.shape}.")
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise InvalidInputError(f"{name} has NaN or infinite values in {int(bad.sum())} row(s), first at row "
                                f"{int(np.argmax(bad))}; re-create these embeddings.")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidInputError(f"{name} has an all-zero row at {int(np.argmax(norms[:, 0] == 0))}; "
                                "it has no direction to compare.")
    if np.abs(norms - 1).max() <= 1e-5:
        return a  # already unit rows (as embeddings are): no copy (400 MB for 200,000 × 512); never written to
    return a / norms


def tac_features(image_embeddings: np.ndarray, counterparts: np.ndarray) -> np.ndarray:
    """TAC's joint rows [x, t] / √2 of unit x and unit t (unit length themselves).

    float64, as the re-clustered runs' centres and the contact sheets have always been computed from.
    """
    return np.concatenate([unit_rows_array(image_embeddings), unit_rows_array(counterparts)], axis=1) / np.sqrt(2)
