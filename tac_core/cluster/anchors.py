"""Text anchors: the vocabulary terms that best describe each cluster, with their scores.

A cluster's text centroid is the normalised mean of its members' text counterparts; a term's score is its
cosine similarity to that centroid. Terms are ranked first among those that sit closer to this cluster
than to any other (so generic nouns near every cluster don't name them all alike), then the rest by score.
Candidates are the nouns TAC selected plus every domain term, so the user's own words are always in the
running.
"""
from __future__ import annotations

import numpy as np

from ..numerics import cluster_unit_means

Anchor = tuple[int, float]  # (vocabulary index, cosine score)


def cluster_anchors(counterparts: np.ndarray, labels: np.ndarray, n_clusters: int,
                    vocab_embeddings: np.ndarray, candidates: np.ndarray, top: int = 10) -> list[list[Anchor]]:
    """For each cluster, up to ``top`` (vocabulary index, score) pairs, best first; empty clusters get []."""
    candidates = np.asarray(candidates, dtype=np.int64)
    centroids = cluster_unit_means(counterparts, labels, n_clusters)
    sizes = np.bincount(labels, minlength=n_clusters)
    scores = centroids @ vocab_embeddings[candidates].T  # (K, n_candidates)
    scores[sizes == 0] = -np.inf
    owner = scores.argmax(axis=0)
    top = min(top, len(candidates))
    anchors: list[list[Anchor]] = []
    for c in range(n_clusters):
        if sizes[c] == 0 or top == 0:
            anchors.append([])
            continue
        order = np.lexsort((-scores[c], owner != c))[:top]  # own terms first, each group by score
        anchors.append([(int(candidates[i]), float(scores[c, i])) for i in order])
    return anchors
