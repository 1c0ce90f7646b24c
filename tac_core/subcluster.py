"""Automatic 2-way split of one cluster, recorded as an explicit ``split`` event.

A reviewer who sees two kinds of defect in one cluster asks for a split; the engine proposes it with
spherical k-means (k = 2) on the members' TAC features ``[image, counterpart]`` — the same space the run was
clustered in, so the halves follow meaning rather than lighting. The proposal is deterministic (fixed seed,
canonical order of the halves) and is stored as the image ids it produced (``ReviewSession.split``), so a
replay of the log never re-runs k-means.

Decisions:
- The larger half keeps the cluster (its id, name, anchors and verified flag); the smaller half becomes the
  new cluster. Equal halves: the half holding the smallest image id stays.
- Only members that are not excluded are split; excluded members stay with the original cluster.
- The new cluster is named ``"<parent name> (split)"`` so its origin stays visible until it is renamed.
- Fewer than 2 members, or members whose features coincide (k-means finds one group), raise
  :class:`~tac_core.errors.InvalidInputError` saying what to do instead (select images and split by hand).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import InvalidInputError
from .kmeans import spherical_kmeans
from .numerics import unit_rows_array
from .review import Edit, ReviewSession
from .workspace_runs import MAX_CLUSTER_NAME_LENGTH

MIN_MEMBERS = 2
SEED = 0
N_INIT = 10
SUFFIX = " (split)"


@dataclass(frozen=True)
class SplitProposal:
    """The two halves of a cluster as image ids: ``keep`` stays, ``split`` becomes the new cluster."""

    cluster: int
    keep: np.ndarray
    split: np.ndarray
    objective: float  # mean cosine of members to their half's centre (higher: tighter halves)


def two_way_labels(features: np.ndarray, order_key: Optional[np.ndarray] = None, random_state: int = SEED,
                   n_init: int = N_INIT) -> tuple[np.ndarray, float]:
    """0/1 labels of rows of ``features`` (cosine k-means, k = 2): 0 the larger half, 1 the smaller.

    Ties in size go to the half holding the smallest ``order_key`` (default: the row index). Raises
    :class:`InvalidInputError` when there are fewer than 2 rows or k-means finds a single group.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) < MIN_MEMBERS:
        raise InvalidInputError(f"a split needs at least {MIN_MEMBERS} images; this cluster has {len(features)}.")
    if not np.isfinite(features).all():
        raise InvalidInputError("the features of this cluster hold NaN or infinite values; re-run the clustering.")
    result = spherical_kmeans(features, 2, n_init=n_init, random_state=random_state)
    labels = result.labels
    sizes = np.bincount(labels, minlength=2)
    if sizes.min() == 0:
        raise InvalidInputError("the images of this cluster are too alike to split automatically; select the "
                                "images to split off on the map or in the gallery and split them off by hand.")
    key = np.arange(len(labels)) if order_key is None else np.asarray(order_key)
    first = [key[labels == half].min() for half in (0, 1)]
    keep_half = 0 if (sizes[0], -first[0]) > (sizes[1], -first[1]) else 1
    return (labels != keep_half).astype(np.int64), result.objective


def propose_split(session: ReviewSession, cluster: int, image_embeddings: Optional[np.ndarray],
                  counterparts: Optional[np.ndarray], random_state: int = SEED) -> SplitProposal:
    """Split ``cluster``'s non-excluded members in two; arrays are the run's, rows by position."""
    state = session.state
    cluster = _existing(session, cluster)
    for name, array in (("image embeddings", image_embeddings), ("text counterparts", counterparts)):
        if array is None:
            raise InvalidInputError(f"run {session.run_id} has no saved {name}, so it cannot be split "
                                    "automatically; select images on the map and split them off by hand.")
        if len(array) != len(state.labels):
            raise InvalidInputError(f"the run's {name} have {len(array)} rows but the run has {len(state.labels)} "
                                    "images; re-run the clustering.")
    pos = np.flatnonzero((state.labels == cluster) & ~state.excluded)
    if len(pos) < MIN_MEMBERS:
        raise InvalidInputError(f"cluster {cluster} has {len(pos)} image(s) that are not excluded; a split needs "
                                f"at least {MIN_MEMBERS}.")
    x = unit_rows_array(image_embeddings[pos])
    t = unit_rows_array(counterparts[pos])
    ids = state.image_ids[pos]
    halves, objective = two_way_labels(np.concatenate([x, t], axis=1), order_key=ids, random_state=random_state)
    return SplitProposal(cluster, np.sort(ids[halves == 0]), np.sort(ids[halves == 1]), objective)


def split_cluster(session: ReviewSession, cluster: int, image_embeddings: Optional[np.ndarray],
                  counterparts: Optional[np.ndarray], name: Optional[str] = None,
                  random_state: int = SEED) -> Edit:
    """Propose a 2-way split and record it as ONE ``split`` event (the smaller half's ids); returns the edit."""
    proposal = propose_split(session, cluster, image_embeddings, counterparts, random_state)
    if name is None:
        parent = session.state.names[proposal.cluster]
        name = parent[:MAX_CLUSTER_NAME_LENGTH - len(SUFFIX)].rstrip() + SUFFIX
    return session.split(proposal.cluster, proposal.split, name)


def _existing(session: ReviewSession, cluster) -> int:
    try:
        cluster = operator.index(cluster)
    except TypeError:
        raise InvalidInputError(f"a cluster id is an integer, not {cluster!r}.") from None
    if cluster not in session.state.names:
        raise InvalidInputError(f"cluster {cluster} does not exist in run {session.run_id} (it may have been merged "
                                "away); choose a cluster from the list.")
    return cluster
