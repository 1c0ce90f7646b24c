"""Cluster sizes as the data has them: TAC without the equal-size assumption.

Both of TAC's clustering steps assume balanced classes: k-means (free mode) lowers its objective most by
cutting a dominant class into several clusters while it merges rare ones, and the entropy bonus of trained
mode pushes every cluster to the same size. Plant sets are the opposite (a good part or one common defect
is half the images, the defects that matter are a few percent), so TAC has two balances:

- ``"uniform"`` — the paper's setting, kept to reproduce it: plain k-means, and the entropy bonus.
- ``"estimated"`` (the default) — free mode repairs the k-means partition by **merge–split swaps**
  (:func:`merge_split_repair`); trained mode, when that repaired partition's sizes are :func:`~tac_core.cluster.sizes.uneven`,
  starts the heads from it (:func:`~tac_core.cluster.heads.warm_start_heads`) and aims them at its size
  profile instead of equal sizes (:func:`~tac_core.cluster.heads.size_profile_divergence`); with even
  sizes it trains as the paper does.

The swap. K is fixed, so a merge frees a cluster that a split must use. Each step takes the two clusters
whose centroids are closest (cosine distance d_merge) and the best split of any cluster (the two halves
whose centroids are furthest apart, d_split), and swaps only when ``d_merge < MERGE_RATIO · d_split``:
the two clusters are far more alike than the two halves are. Splits are proposed by over-clustering the
cluster into :data:`SPLIT_GROUPS` groups and merging those by centroid similarity to two (2-means itself
has the size bias being repaired: it halves a big class rather than cut off a small distinct group; macro
recall with 2-means proposals was 86.5 on the dominant bed and 75.7 on the long tail, with 4 groups 88.2
and 79.2).
On a balanced set no pair qualifies and the k-means partition stays as it is.

Measured on the synthetic bed (``bench.quality``, 3,000 images, 10 classes; ACC / macro recall, %,
seeds 0–4): over-clustering to 50 groups and merging by centroid similarity gave 91 / 88 on the dominant
bed but lost 10 points on the balanced one (3 seeds: about 10 % of the images match no class noun, form
groups of their own and outlast real classes in the merge); swaps from k-means gave 92.9 / 88.2 dominant and left
the balanced bed unchanged. A swap ratio of 0.5 and 0.8 measured alike on the imbalanced beds; 0.8 already
made one bad swap on a balanced one, so the conservative 0.5 is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..numerics import cluster_sums, single_cpu_thread
from ..progress import CancelToken, check_cancel
from .kmeans import spherical_kmeans
from .sizes import size_profile

MERGE_RATIO = 0.5
SPLIT_GROUPS = 4
SPLIT_RESTARTS = 2
SPLIT_MAX_ITER = 50
MIN_SPLIT_SIZE = 5  # neither half of a split may be smaller; also at least N / MIN_SPLIT_DIVISOR
MIN_SPLIT_DIVISOR = 200


@dataclass(frozen=True)
class Swap:
    """One merge–split step: ``merged`` into ``kept``, then ``split`` cut in two (its new half takes ``merged``)."""
    kept: int
    merged: int
    merge_distance: float
    split: int
    split_distance: float


def merge_by_centroids(sums: np.ndarray, n_target: int) -> np.ndarray:
    """Greedy centroid linkage: merge the two groups with the most similar centroids until ``n_target`` remain.

    ``sums`` (groups × d) are each group's summed unit rows; returns the merged id (0..n_target-1) per group.
    """
    sums = np.asarray(sums, dtype=np.float64).copy()
    owner = np.arange(len(sums))
    alive = np.ones(len(sums), dtype=bool)
    while alive.sum() > n_target:
        idx = np.flatnonzero(alive)
        unit = sums[idx] / np.maximum(np.linalg.norm(sums[idx], axis=1, keepdims=True), 1e-12)
        sim = unit @ unit.T
        np.fill_diagonal(sim, -np.inf)
        a, b = np.unravel_index(int(np.argmax(sim)), sim.shape)
        keep, drop = idx[min(a, b)], idx[max(a, b)]
        sums[keep] += sums[drop]
        alive[drop] = False
        owner[owner == drop] = keep
    return np.searchsorted(np.flatnonzero(alive), owner)


def _unit(sums: np.ndarray) -> np.ndarray:
    return sums / np.maximum(np.linalg.norm(sums, axis=-1, keepdims=True), 1e-12)


def _proposal(features: np.ndarray, members: np.ndarray, min_size: int, seed: int,
              device) -> Optional[tuple[float, np.ndarray]]:
    """The best split of the cluster ``members``: (cosine distance between the halves' centroids, the rows of
    the second half), or None when no split leaves both halves ``min_size`` rows."""
    groups = int(min(SPLIT_GROUPS, len(members) // min_size))
    if groups < 2:
        return None
    x = features[members]
    result = spherical_kmeans(x, groups, n_init=SPLIT_RESTARTS, max_iter=SPLIT_MAX_ITER, random_state=seed,
                              device=device)
    halves = merge_by_centroids(cluster_sums(x, result.labels, groups), 2)[result.labels]
    if np.bincount(halves, minlength=2).min() < min_size:
        return None
    centers = _unit(cluster_sums(x, halves, 2))
    return 1.0 - float(centers[0] @ centers[1]), members[halves == 1]


def merge_split_repair(features: np.ndarray, labels: np.ndarray, n_clusters: int, ratio: float = MERGE_RATIO,
                       min_size: Optional[int] = None, random_state: Optional[int] = None,
                       device: str | torch.device = "cpu",
                       cancel: Optional[CancelToken] = None) -> tuple[np.ndarray, list[Swap]]:
    """Undo the size bias of a k-means partition by merge–split swaps (see the module docstring).

    ``features`` are unit rows, ``labels`` the partition into ``n_clusters``. Returns the repaired labels
    (same id space; the merged cluster's id goes to the new half) and the swaps made, at most K. Split
    proposals are cached per cluster and recomputed only for the clusters a swap changed.
    """
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64).copy()
    if min_size is None:
        min_size = max(MIN_SPLIT_SIZE, len(features) // MIN_SPLIT_DIVISOR)
    seed = 0 if random_state is None else int(random_state)
    sums = cluster_sums(features, labels, n_clusters)

    proposals: dict[int, Optional[tuple[float, np.ndarray]]] = {}  # cluster -> (distance, second half's rows)
    swaps: list[Swap] = []
    with single_cpu_thread(device):  # small products: two threads were 12x slower on a busy 2-core machine
        for _ in range(n_clusters):
            check_cancel(cancel)
            live = np.flatnonzero(np.bincount(labels, minlength=n_clusters) > 0)
            if len(live) < 2:
                break
            sim = _unit(sums[live]) @ _unit(sums[live]).T
            np.fill_diagonal(sim, -np.inf)
            a, b = sorted(live[list(np.unravel_index(int(np.argmax(sim)), sim.shape))])
            merge_distance = 1.0 - float(sim.max())
            for c in live:
                if c not in proposals and c not in (a, b):
                    proposals[c] = _proposal(features, np.flatnonzero(labels == c), min_size, seed, device)
            merged = np.flatnonzero((labels == a) | (labels == b))
            candidates = {c: p for c, p in proposals.items() if c not in (a, b) and p is not None}
            candidates[a] = _proposal(features, merged, min_size, seed, device)
            candidates = {c: p for c, p in candidates.items() if p is not None}
            if not candidates:
                break
            split = max(candidates, key=lambda c: candidates[c][0])
            split_distance, half = candidates[split]
            if merge_distance >= ratio * split_distance:
                break
            if split == a and (np.array_equal(half, np.flatnonzero(labels == b))
                               or np.array_equal(half, np.flatnonzero(labels == a))):
                break  # the best split of the merged pair is the pair itself: nothing would change
            labels[merged] = a
            labels[half] = b
            swaps.append(Swap(int(a), int(b), merge_distance, int(split), float(split_distance)))
            for c in {a, b, split}:
                proposals.pop(c, None)
                sums[c] = features[labels == c].sum(axis=0, dtype=np.float64)
    return labels, swaps


def free_size_profile(features: np.ndarray, n_clusters: int, n_init: int = 10, random_state: Optional[int] = None,
                      device: str | torch.device = "cpu", cancel: Optional[CancelToken] = None) -> np.ndarray:
    """The cluster shares of the balance-aware free partition of ``features`` (k-means, then swaps), sorted
    largest first: the reference a run's sizes are compared with in :func:`~tac_core.cluster.sizes.check_forced_sizes`."""
    result = spherical_kmeans(features, n_clusters, n_init=n_init, random_state=random_state, device=device,
                              cancel=cancel)
    labels, _ = merge_split_repair(features, result.labels, n_clusters, random_state=random_state, device=device,
                                   cancel=cancel)
    return np.sort(size_profile(labels, n_clusters))[::-1]
