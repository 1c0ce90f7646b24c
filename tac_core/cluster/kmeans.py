"""Spherical k-means that does not depend on one library version's luck.

TAC's published numbers swing by 14 accuracy points between faiss versions because the reference runs a
single flavour of k-means on a 256-points-per-centroid subsample. This implementation is deliberately
boring: k-means++ seeding with greedy local trials, Lloyd iterations on the *full* data with a convergence
check, empty clusters re-seeded from the worst-fitted points, and several restarts advanced together in
one matrix product (so restarts are cheap) with the best objective kept. Everything runs in torch on the
CPU or a GPU, in row chunks so memory stays bounded for hundreds of thousands of points.

Speed: seeding is sequential (one pass over the points per centre), so all restarts are seeded together in
that pass, and above :data:`SEED_MIN_POINTS` points the seeds are drawn from a uniform sample of
``max(SEED_MIN_POINTS, SEED_POINTS_PER_CLUSTER · k)`` points (same objective on 50,000 × 512, 167 centres);
centre sums use a scatter-add on the CPU when there are many clusters per restart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..errors import InvalidInputError
from ..numerics import flush_denormals, normalize_rows, unit_rows
from ..progress import CancelToken, ProgressFn, check_cancel, report

CHUNK_ROWS = 16384
SEED_MIN_POINTS = 20_000
SEED_POINTS_PER_CLUSTER = 64
SCATTER_MIN_CLUSTERS = 32  # per restart; below it the one-hot product is faster (measured, 50k x 1024)


@dataclass
class KMeansResult:
    labels: np.ndarray  # (n,) int64
    centers: np.ndarray  # (k, d) float32, unit rows
    objective: float  # mean cosine similarity of points to their centre (higher is better)
    n_iter: int  # iterations of the winning restart


def _best_of_blocks(x: torch.Tensor, centers: torch.Tensor, n_blocks: int):
    """For each row, the best centre within each block of ``k`` columns: (similarity, index), chunked."""
    n = x.shape[0]
    k = centers.shape[0] // n_blocks
    best_sim = torch.empty((n, n_blocks), dtype=x.dtype, device=x.device)
    best_idx = torch.empty((n, n_blocks), dtype=torch.long, device=x.device)
    for start in range(0, n, CHUNK_ROWS):
        sims = (x[start:start + CHUNK_ROWS] @ centers.T).view(-1, n_blocks, k)
        best_sim[start:start + CHUNK_ROWS], best_idx[start:start + CHUNK_ROWS] = sims.max(dim=2)
    return best_sim, best_idx


def kmeans_plusplus(x: torch.Tensor, k: int, rng: np.random.Generator, n_init: int = 1) -> torch.Tensor:
    """Greedy k-means++ seeding (as in scikit-learn) with cosine distance 1 - x·c, for ``n_init`` restarts at once.

    Returns the (n_init · k, d) stacked centres, restart by restart. Each step draws ``2 + log k`` candidates
    per restart with probability proportional to the distance to the closest centre so far and keeps the one
    that lowers the total distance most. All restarts advance together, so one pass over the data (a product
    with every candidate of every restart) serves them all; the draws use the cumulative weights on the
    device (as ``Generator.choice`` does) instead of copying n weights to numpy per centre. The random numbers
    are drawn restart by restart in the order the former one-restart-at-a-time loop with ``rng.choice`` drew
    them, so a seed gives the same centres as before.
    """
    n = x.shape[0]
    n_trials = 2 + int(math.log(k))
    restarts = torch.arange(n_init, device=x.device)
    firsts, uniforms = [], []
    for _ in range(n_init):
        firsts.append(int(rng.integers(n)))
        uniforms.append(rng.random((k - 1, n_trials)))
    uniforms = torch.as_tensor(np.stack(uniforms), device=x.device)  # (n_init, k - 1, n_trials)
    chosen = torch.empty((n_init, k), dtype=torch.long, device=x.device)
    chosen[:, 0] = torch.as_tensor(firsts, device=x.device)
    closest = (1.0 - x @ x[chosen[:, 0]].T).clamp_min(0)  # (n, n_init)
    for step in range(1, k):
        cumulative = torch.cumsum(closest.T.double(), dim=1)  # (n_init, n)
        totals = cumulative[:, -1:]
        draws = uniforms[:, step - 1] * totals
        candidates = torch.searchsorted(cumulative, draws, right=True).clamp_max(n - 1)
        degenerate = (totals[:, 0] <= 0).nonzero().flatten()
        if len(degenerate):  # every point coincides with a centre: any index will do
            candidates[degenerate] = torch.as_tensor(rng.integers(n, size=(len(degenerate), n_trials)),
                                                     device=x.device)
        dist = (1.0 - x @ x[candidates.flatten()].T).clamp_min(0).view(n, n_init, n_trials)
        trial_closest = torch.minimum(closest.unsqueeze(2), dist)  # (n, n_init, n_trials)
        best = trial_closest.sum(dim=0).argmin(dim=1)  # (n_init,)
        chosen[:, step] = candidates[restarts, best]
        closest = trial_closest[:, restarts, best]
    return x[chosen.flatten()].clone()


def _seeding_sample(x: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """The points k-means++ seeds from: all of them up to :data:`SEED_MIN_POINTS`, else a uniform sample of
    ``max(SEED_MIN_POINTS, SEED_POINTS_PER_CLUSTER · k)``.

    Seeding is sequential, one pass over the points per centre: 167 passes over 50,000 × 512 were half the
    time of TAC's free mode. Seeds from a sample this size are as good (Lloyd iterations then run on every
    point; ``bench/perf.py`` reports the objective and accuracy); smaller collections are seeded from all.
    """
    n = x.shape[0]
    size = max(SEED_MIN_POINTS, SEED_POINTS_PER_CLUSTER * k)
    if n <= size:
        return x
    picked = np.sort(rng.choice(n, size=size, replace=False))
    return x[torch.as_tensor(picked, device=x.device)]


def _update_centers(x: torch.Tensor, labels: torch.Tensor, best_sim: torch.Tensor,
                    n_blocks: int, k: int) -> torch.Tensor:
    """Normalised means per cluster; an empty cluster takes the worst-fitted point of its restart.

    Sums are one chunked product of a one-hot assignment matrix with the data, for all restarts at once. On
    the CPU with many clusters per restart, a scatter-add per restart is cheaper (k = 167: 4x); it stays off
    the GPU, where its atomic adds would make results vary from run to run.
    """
    n, d = x.shape
    sums = torch.zeros((n_blocks * k, d), dtype=x.dtype, device=x.device)
    counts = torch.zeros(n_blocks * k, dtype=x.dtype, device=x.device)
    if x.device.type == "cpu" and k >= SCATTER_MIN_CLUSTERS:
        for b in range(n_blocks):
            sums[b * k:(b + 1) * k].index_add_(0, labels[:, b], x)
            counts[b * k:(b + 1) * k] = torch.bincount(labels[:, b], minlength=k).to(x.dtype)
    else:
        offsets = torch.arange(n_blocks, device=x.device) * k
        for start in range(0, n, CHUNK_ROWS):
            flat = labels[start:start + CHUNK_ROWS] + offsets  # (rows, n_blocks)
            onehot = torch.zeros((flat.shape[0], n_blocks * k), dtype=x.dtype, device=x.device)
            onehot.scatter_(1, flat, 1.0)
            sums += onehot.T @ x[start:start + CHUNK_ROWS]
            counts += onehot.sum(dim=0)
    empty = torch.nonzero(counts == 0).flatten()
    for b in torch.unique(empty // k).tolist():
        block_empty = empty[empty // k == b]
        worst = torch.argsort(best_sim[:, b])[: len(block_empty)]
        sums[block_empty] = x[worst]
    return normalize_rows(sums)


def spherical_kmeans(
    x: np.ndarray | torch.Tensor,
    n_clusters: int,
    n_init: int = 10,
    max_iter: int = 100,
    tol: float = 1e-6,
    random_state: Optional[int] = None,
    device: str | torch.device = "cpu",
    progress: Optional[ProgressFn] = None,
    stage: str = "clustering",
    cancel: Optional[CancelToken] = None,
) -> KMeansResult:
    """Cluster unit vectors by cosine similarity; the best of ``n_init`` restarts wins.

    All restarts run side by side: one chunked product of the data with the stacked centres per iteration.
    Iteration stops when no restart improves its mean similarity by more than ``tol``.
    """
    x = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x)
    x = unit_rows(x.to(device=device, dtype=torch.float32))
    n = x.shape[0]
    if not 1 <= n_clusters <= n:
        raise InvalidInputError(f"k-means needs 1 <= n_clusters <= number of points ({n}); got {n_clusters}.")
    rng = np.random.default_rng(random_state)
    with flush_denormals():
        centers = kmeans_plusplus(_seeding_sample(x, n_clusters, rng), n_clusters, rng, n_init)
        previous = torch.full((n_init,), -math.inf, dtype=torch.float64)
        iterations = torch.zeros(n_init, dtype=torch.long)
        for step in range(1, max_iter + 1):
            check_cancel(cancel)
            best_sim, labels = _best_of_blocks(x, centers, n_init)
            objective = best_sim.double().mean(dim=0).cpu()
            improving = (objective - previous) > tol
            iterations += improving.long()
            report(progress, stage, step, max_iter)
            if not bool(improving.any()):
                break
            previous = objective
            centers = _update_centers(x, labels, best_sim, n_init, n_clusters)
    winner = int(objective.argmax())
    report(progress, stage, max_iter, max_iter)
    return KMeansResult(
        labels=labels[:, winner].cpu().numpy().astype(np.int64),
        centers=centers[winner * n_clusters:(winner + 1) * n_clusters].cpu().numpy().astype(np.float32),
        objective=float(objective[winner]),
        n_iter=int(iterations[winner]),
    )
