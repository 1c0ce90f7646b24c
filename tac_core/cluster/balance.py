"""Cluster sizes as the data has them: TAC without the equal-size assumption.

Both of TAC's clustering steps assume balanced classes: k-means (free mode) lowers its objective most by
cutting a dominant class into several clusters while it merges rare ones, and the entropy bonus of trained
mode pushes every cluster to the same size. Plant sets are the opposite (a good part or one common defect
is half the images, the defects that matter are a few percent), so TAC has two balances:

- ``"uniform"`` — the paper's setting, kept to reproduce it: plain k-means, and the entropy bonus.
- ``"estimated"`` (the default) — free mode repairs the k-means partition by **merge–split swaps**
  (:func:`merge_split_repair`); trained mode aims the heads at the size profile of that repaired partition
  instead of equal sizes (:func:`tac_core.cluster.heads.size_profile_divergence`).

The swap. K is fixed, so a merge frees a cluster that a split must use. Each step takes the two clusters
whose centroids are closest (cosine distance d_merge) and the best split of any cluster (the two halves
whose centroids are furthest apart, d_split), and swaps only when ``d_merge < MERGE_RATIO · d_split``:
the two clusters are far more alike than the two halves are. Splits are proposed by over-clustering the
cluster into :data:`SPLIT_GROUPS` groups and merging those by centroid similarity to two (2-means itself
has the size bias being repaired: it halves a big class rather than cut off a small distinct group).
On a balanced set no pair qualifies and the k-means partition stays as it is.

Measured on the synthetic bed (``bench.quality``, 3,000 images, 10 classes; ACC / macro recall, %,
seeds 0–4): over-clustering to 50 groups and merging by centroid similarity gave 91 / 88 on the dominant
bed but lost 11 points on the balanced one (about 10 % of the images match no class noun, form groups of
their own and outlast real classes in the merge); swaps from k-means gave 92.9 / 88.2 dominant and left
the balanced bed unchanged. A swap ratio of 0.5 and 0.8 measured alike on the imbalanced beds; 0.8 already
made one bad swap on a balanced one, so the conservative 0.5 is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..errors import InvalidInputError
from ..numerics import cluster_unit_means
from ..progress import CancelToken, check_cancel
from .kmeans import spherical_kmeans

BALANCES = ("estimated", "uniform")
MERGE_RATIO = 0.5
SPLIT_GROUPS = 4
SPLIT_RESTARTS = 2
MIN_SPLIT_SIZE = 5  # neither half of a split may be smaller; also at least N / MIN_SPLIT_DIVISOR
MIN_SPLIT_DIVISOR = 200


def check_balance(balance) -> None:
    if balance not in BALANCES:
        raise InvalidInputError(f"balance must be one of {BALANCES}; got {balance!r}.")


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


def _split_proposal(features: np.ndarray, min_size: int, seed: int, device) -> Optional[tuple[float, np.ndarray]]:
    """(cosine distance between the halves' centroids, mask of the second half), or None if no valid split."""
    groups = int(min(SPLIT_GROUPS, len(features) // min_size))
    if groups < 2:
        return None
    result = spherical_kmeans(features, groups, n_init=SPLIT_RESTARTS, random_state=seed, device=device)
    sums = np.zeros((groups, features.shape[1]))
    np.add.at(sums, result.labels, features)
    halves = merge_by_centroids(sums, 2)[result.labels]
    if np.bincount(halves, minlength=2).min() < min_size:
        return None
    centers = cluster_unit_means(features, halves, 2)
    return 1.0 - float(centers[0] @ centers[1]), halves == 1


def merge_split_repair(features: np.ndarray, labels: np.ndarray, n_clusters: int, ratio: float = MERGE_RATIO,
                       min_size: Optional[int] = None, random_state: Optional[int] = None,
                       device: str | torch.device = "cpu",
                       cancel: Optional[CancelToken] = None) -> tuple[np.ndarray, list[Swap]]:
    """Undo the size bias of a k-means partition by merge–split swaps (see the module docstring).

    ``features`` are unit rows, ``labels`` the partition into ``n_clusters``. Returns the repaired labels
    (same id space; the merged cluster's id goes to the new half) and the swaps made, at most K.
    """
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64).copy()
    if min_size is None:
        min_size = max(MIN_SPLIT_SIZE, len(features) // MIN_SPLIT_DIVISOR)
    seed = 0 if random_state is None else int(random_state)
    proposals: dict[int, Optional[tuple[float, np.ndarray, np.ndarray]]] = {}  # cluster -> (distance, members, half)

    def proposal(members: np.ndarray):
        found = (_split_proposal(features[members], min_size, seed, device)
                 if len(members) >= 2 * min_size else None)
        return None if found is None else (found[0], members, members[found[1]])

    swaps: list[Swap] = []
    for _ in range(n_clusters):
        check_cancel(cancel)
        centers = cluster_unit_means(features, labels, n_clusters)
        sizes = np.bincount(labels, minlength=n_clusters)
        sim = centers @ centers.T
        sim[sizes == 0] = -np.inf
        sim[:, sizes == 0] = -np.inf
        np.fill_diagonal(sim, -np.inf)
        if not np.isfinite(sim).any():
            break
        a, b = sorted(np.unravel_index(int(np.argmax(sim)), sim.shape))
        merge_distance = 1.0 - float(sim[a, b])
        for c in range(n_clusters):
            if c not in proposals:
                proposals[c] = proposal(np.flatnonzero(labels == c)) if c not in (a, b) else None
        merged_members = np.flatnonzero((labels == a) | (labels == b))
        candidates = {c: p for c, p in proposals.items() if c not in (a, b) and p is not None}
        candidates[a] = proposal(merged_members)
        candidates = {c: p for c, p in candidates.items() if p is not None}
        if not candidates:
            break
        split = max(candidates, key=lambda c: candidates[c][0])
        split_distance, _, half = candidates[split]
        if merge_distance >= ratio * split_distance:
            break
        if split == a and (np.array_equal(half, np.flatnonzero(labels == b))
                           or np.array_equal(half, np.flatnonzero(labels == a))):
            break  # the best split of the merged pair is the pair itself: nothing would change
        labels[merged_members] = a
        labels[half] = b
        swaps.append(Swap(int(a), int(b), merge_distance, int(split), float(split_distance)))
        for c in (a, b, split):
            proposals.pop(c, None)
    return labels, swaps


def size_profile(labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Each cluster's share of the samples (K values summing to 1)."""
    return np.bincount(np.asarray(labels), minlength=n_clusters) / max(1, len(labels))
