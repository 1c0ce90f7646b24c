"""Possible merges of a run being reviewed: :func:`tac_core.cluster.merges.possible_merges` on its clusters as
they are now, each with the merge one click would make.

The clusters are the review state's (merges, moves and splits in effect; excluded images left out), the rows
are TAC's [x, t] (what the run clustered), the anchors each current cluster's (a merged cluster has the union
of its parts'; a split-off one none, so it is listed on its centroid alone). A suggestion merges the smaller
cluster into the larger, so the larger keeps its id and name; ties keep the lower id.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cluster.merges import PossibleMerge, possible_merges
from .review_state import ReviewState


@dataclass(frozen=True)
class MergeSuggestion:
    """``source`` merged into ``target`` (the larger), with the evidence; ``shared_terms`` name its shared anchors."""
    source: int
    target: int
    evidence: PossibleMerge
    shared_terms: tuple[str, ...]


def review_merges(state: ReviewState, features: np.ndarray) -> list[MergeSuggestion]:
    """The possible merges among the state's clusters, closest first. ``features``: the run's rows by position
    (:func:`~tac_core.numerics.tac_features` of its image embeddings and counterparts)."""
    labels = state.included_labels()
    n_clusters = max(max(state.names, default=-1), int(labels.max(initial=-1))) + 1
    anchors = [state.anchors(c) if c in state.names else [] for c in range(n_clusters)]
    terms = sorted({term for pairs in anchors for term, _ in pairs})
    index = {term: i for i, term in enumerate(terms)}
    by_index = [[(index[term], score) for term, score in pairs] for pairs in anchors]
    sizes = np.bincount(labels[labels >= 0], minlength=n_clusters)
    found = []
    for merge in possible_merges(features, labels, n_clusters, by_index, term_names=terms):
        a, b = merge.clusters
        target, source = (a, b) if sizes[a] >= sizes[b] else (b, a)
        found.append(MergeSuggestion(source, target, merge, tuple(terms[t] for t in merge.shared_anchors)))
    return found
