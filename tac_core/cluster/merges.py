"""Possible merges: pairs of clusters that look like one group cut in two, with the evidence for each.

A run that split a large class (k-means and TAC's equal-size assumption both do, see
:mod:`tac_core.cluster.balance`) leaves clusters whose centroids sit much closer to each other than
clusters usually do, and whose text anchors overlap. Each pair is scored by

- **centroid similarity** — cosine of the two clusters' normalised mean features (the space the run
  clustered in, [x, t] for TAC), and its **relative distance**: (1 − similarity) over the median of that
  distance over all pairs of clusters, so the rule does not depend on one model's similarity scale;
- **shared anchors** — vocabulary terms among the ``top_anchors`` best-scoring anchors of both clusters
  (by score, not in :mod:`~tac_core.cluster.anchors`' own-terms-first order, which by design keeps a term
  that two halves share out of one of their top places).

A pair is listed when its relative distance is at most :data:`MERGE_RATIO` (the merge–split swaps use the
same ratio), or when it shares at least ``min_shared`` anchors and its relative distance is at most
:data:`SHARED_ANCHOR_RATIO`. Closest first. Each pair carries a few typical members of both clusters (those
nearest their own centroid) for thumbnails, and a sentence that says why it is listed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..numerics import cluster_unit_means, unit_rows_array
from .anchors import Anchor
from .balance import MERGE_RATIO

SHARED_ANCHOR_RATIO = 0.8
TOP_ANCHORS = 5
MIN_SHARED = 2
N_EXAMPLES = 4


@dataclass(frozen=True)
class PossibleMerge:
    """Two clusters that may be one group, with the evidence."""
    clusters: tuple[int, int]
    centroid_similarity: float
    relative_distance: float  # (1 − similarity) / median over all pairs of clusters
    shared_anchors: tuple[int, ...]  # vocabulary indices, in the first cluster's anchor order
    examples: tuple[tuple[int, ...], tuple[int, ...]]  # typical members of each cluster (sample indices)
    reason: str


def _typical_members(features: np.ndarray, labels: np.ndarray, center: np.ndarray, cluster: int,
                     n: int) -> tuple[int, ...]:
    members = np.flatnonzero(labels == cluster)
    order = np.argsort(-(unit_rows_array(features[members]) @ center), kind="stable")
    return tuple(int(i) for i in members[order[:n]])


def possible_merges(features: np.ndarray, labels: np.ndarray, n_clusters: int,
                    anchors: Optional[Sequence[Sequence[Anchor]]] = None,
                    term_names: Optional[Sequence[str]] = None, top_anchors: int = TOP_ANCHORS,
                    min_shared: int = MIN_SHARED, n_examples: int = N_EXAMPLES) -> list[PossibleMerge]:
    """The pairs of clusters worth merging, closest first (the rule is in the module docstring).

    ``features`` (N × D) are what the run clustered; ``labels`` its clusters 0..K−1 (−1: excluded images,
    ignored); ``anchors`` per cluster as :attr:`TAC.anchors_`; ``term_names`` (vocabulary names) only
    make the reasons readable. Fewer than three non-empty clusters give no median to compare with: [].
    """
    features = np.asarray(features)
    labels = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise InvalidInputError(f"features must be N × D with one label per row; got {features.shape} and "
                                f"{labels.shape}.")
    if labels.max(initial=-1) >= n_clusters:
        raise InvalidInputError(f"labels go up to {labels.max()} but n_clusters is {n_clusters}.")
    if anchors is not None and len(anchors) != n_clusters:
        raise InvalidInputError(f"anchors must list one entry per cluster ({n_clusters}); got {len(anchors)}.")
    kept = labels >= 0
    sizes = np.bincount(labels[kept], minlength=n_clusters)
    live = np.flatnonzero(sizes > 0)
    if len(live) < 3:
        return []
    centers = cluster_unit_means(features[kept], labels[kept], n_clusters)
    sim = centers[live] @ centers[live].T
    rows, cols = np.triu_indices(len(live), k=1)
    distances = 1.0 - sim[rows, cols]
    median = max(float(np.median(distances)), 1e-12)
    tops = [[term for term, _ in sorted(anchors[c] if anchors is not None else [], key=lambda a: -a[1])][:top_anchors]
            for c in range(n_clusters)]  # by score: the own-terms-first order would hide what two halves share
    found = []
    for i, j, distance in zip(rows, cols, distances):
        a, b = int(live[i]), int(live[j])
        relative = float(distance) / median
        shared = tuple(term for term in tops[a] if term in tops[b])
        close = relative <= MERGE_RATIO
        if not (close or (len(shared) >= min_shared and relative <= SHARED_ANCHOR_RATIO)):
            continue
        similarity = 1.0 - float(distance)
        text = (f"clusters {a} and {b}: centroids {similarity:.2f} similar, {relative:.2f}× the typical distance "
                f"between clusters")
        if shared:
            names = [term_names[t] if term_names is not None else f"term {t}" for t in shared]
            text += f"; {len(shared)} shared anchors ({', '.join(names)})"
        found.append(PossibleMerge((a, b), similarity, relative, shared,
                                   (_typical_members(features, labels, centers[a], a, n_examples),
                                    _typical_members(features, labels, centers[b], b, n_examples)), text + "."))
    return sorted(found, key=lambda m: m.relative_distance)
