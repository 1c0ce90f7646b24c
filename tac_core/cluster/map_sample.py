"""Which of a run's points the Review map draws, and which images it shows as thumbnails at their points.

A browser re-parses and redraws every point it is sent (a million points is ~18 MB of figure and seconds of
WebGL work per redraw), so above a budget the map draws a sample:

- every cluster at the same rate (``budget / n``), so the picture's density is the data's density, with at
  least ``min_per_cluster`` points of each cluster so that a small cluster stays visible;
- plus every point in focus (the open cluster, the selection), up to ``focus_budget``.

Points are taken in one fixed random order per run (:func:`draw_ranks`), so the sample is stable: an edit
changes only the points it moves, and nothing jumps between reruns. Counts are never read off the sample:
callers take sizes from the review state, and a selection made on the map is resolved over every point
(:mod:`tac_core.cluster.map_regions`).

Thumbnails on the map (:func:`thumbnail_picks`) are each cluster's most confident images, spread over the
cluster's area by farthest-point picking, in levels: a few per cluster at level 0, more at levels 1 and 2,
which the page draws smaller, so that they become readable as the user zooms in.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import InvalidInputError

DRAW_BUDGET = 20_000
FOCUS_BUDGET = 20_000
MIN_PER_CLUSTER = 200
THUMBNAIL_BUDGET = 150  # thumbnails on the whole map, all levels together
THUMBNAIL_LEVELS = (1, 2, 4)  # per cluster and level, in this ratio: 3 at level 0 for 21 per cluster
CANDIDATES = 200  # the most confident members a cluster's thumbnails are picked from


def draw_ranks(n: int, seed: int = 0) -> np.ndarray:
    """A fixed random order of ``n`` points (rank per point): the order in which a sample takes them."""
    ranks = np.empty(n, np.int64)
    ranks[np.random.default_rng(seed).permutation(n)] = np.arange(n)
    return ranks


def sample_positions(labels: np.ndarray, ranks: np.ndarray, budget: int = DRAW_BUDGET,
                     focus: Optional[np.ndarray] = None, min_per_cluster: int = MIN_PER_CLUSTER,
                     focus_budget: int = FOCUS_BUDGET, shown: Optional[np.ndarray] = None) -> np.ndarray:
    """Sorted positions to draw: all when there are at most ``budget``, else each group of ``labels`` (a
    cluster; −1, the excluded images, is a group too) at the rate ``budget / n`` but at least
    ``min_per_cluster`` of it, taken by lowest rank, plus the ``focus`` positions (bool mask or positions),
    the ``focus_budget`` lowest-ranked of them when there are more. ``shown`` (sorted positions, e.g. those
    that pass a filter) limits all of it to those points."""
    labels, ranks = np.asarray(labels), np.asarray(ranks)
    n = len(labels)
    if ranks.shape != (n,):
        raise InvalidInputError(f"ranks must have one entry per point ({n}); got shape {ranks.shape}.")
    if shown is not None:
        shown = np.asarray(shown, np.int64)
        if focus is not None:
            focus = np.asarray(focus)
            focus = focus[shown] if focus.dtype == bool else np.flatnonzero(np.isin(shown, focus))
        return shown[sample_positions(labels[shown], ranks[shown], budget, focus, min_per_cluster, focus_budget)]
    if n <= budget:
        return np.arange(n)
    by_rank = np.argsort(ranks, kind="stable")
    groups = labels[by_rank] - labels.min()
    order = by_rank[np.argsort(groups, kind="stable")]  # grouped by cluster, lowest rank first within each
    counts = np.bincount(groups)
    quota = np.minimum(counts, np.maximum(min_per_cluster, np.round(counts * (budget / n)).astype(np.int64)))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    group_of = np.repeat(np.arange(len(counts)), counts)
    taken = order[np.arange(n) - starts[group_of] < quota[group_of]]
    if focus is not None:
        focus = np.asarray(focus)
        focus = np.flatnonzero(focus) if focus.dtype == bool else focus.astype(np.int64)
        if len(focus) > focus_budget:
            focus = focus[np.argsort(ranks[focus], kind="stable")[:focus_budget]]
        taken = np.union1d(taken, focus)
    return np.sort(taken)


def thumbnail_picks(xy: np.ndarray, labels: np.ndarray, confidence: np.ndarray,
                    budget: int = THUMBNAIL_BUDGET) -> tuple[np.ndarray, np.ndarray]:
    """(positions, level) of the images to show as thumbnails on the map: per cluster (labels ≥ 0), its
    most confident member first, then the member among its :data:`CANDIDATES` most confident that lies
    farthest from those already picked, and so on; the first picks are level 0, the next level 1, the rest
    level 2 (:data:`THUMBNAIL_LEVELS`). At most ``budget`` in all, at least one per cluster while the budget
    lasts, larger clusters first."""
    labels = np.asarray(labels)
    clusters, sizes = np.unique(labels[labels >= 0], return_counts=True)
    if clusters.size == 0 or budget <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    per_cluster = max(1, budget // len(clusters))
    shares = np.cumsum(THUMBNAIL_LEVELS) / np.sum(THUMBNAIL_LEVELS)
    picked, levels = [], []
    for cluster in clusters[np.argsort(-sizes, kind="stable")][:budget]:
        members = np.flatnonzero(labels == cluster)
        pool = members[np.argsort(-confidence[members], kind="stable")[:CANDIDATES]]
        chosen = _spread(xy[pool], min(per_cluster, len(pool)))
        level_ends = np.ceil(len(chosen) * shares).astype(int)  # a small cluster gets few large thumbnails too
        picked.append(pool[chosen])
        levels.append(np.searchsorted(level_ends, np.arange(len(chosen)), side="right"))
    return np.concatenate(picked), np.concatenate(levels).astype(np.int64)


def _spread(points: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` of ``points``: the first, then each time the one farthest from those picked."""
    chosen = [0]
    distance = np.linalg.norm(points - points[0], axis=1)
    while len(chosen) < k:
        nxt = int(np.argmax(distance))
        if distance[nxt] <= 0:  # the rest sit on picked points: take them in confidence order
            rest = [i for i in range(len(points)) if i not in set(chosen)]
            chosen += rest[: k - len(chosen)]
            break
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
    return np.asarray(chosen, np.int64)
