"""Automatic 2-way split of one cluster of a review session, recorded as an explicit ``split`` event.

A reviewer who sees two kinds of defect in one cluster asks for a split; the engine proposes it with
:func:`tac_core.cluster.subcluster.two_way_labels` on the members' TAC features ``[image, counterpart]``.
The proposal is stored as the image ids it produced (``ReviewSession.split``), so a replay of the log never
re-runs k-means.

Decisions:
- The larger half keeps the cluster (its id, name, anchors and verified flag); the smaller half becomes the
  new cluster. Equal halves: the half holding the smallest image id stays.
- Only members that are not excluded are split; excluded members stay with the original cluster.
- The new cluster is named ``"<parent name> (split)"`` so its origin stays visible until it is renamed; a
  selection split off by hand (:func:`split_off`) is named the same way.
- Fewer than 2 members, or members whose features coincide, raise
  :class:`~tac_core.errors.InvalidInputError` saying what to do instead (select images and split by hand).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..cluster.subcluster import MIN_MEMBERS, SEED, two_way_labels
from ..errors import InvalidInputError
from ..numerics import unit_rows_array
from .review import Edit, ReviewSession
from .runs import MAX_CLUSTER_NAME_LENGTH

SUFFIX = " (split)"


@dataclass(frozen=True)
class SplitProposal:
    """The two halves of a cluster as image ids: ``keep`` stays, ``split`` becomes the new cluster."""

    cluster: int
    keep: np.ndarray
    split: np.ndarray
    objective: float  # mean cosine of members to their half's centre (higher: tighter halves)


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
    return session.split(proposal.cluster, proposal.split, split_name(session.state.names[proposal.cluster])
                         if name is None else name)


def split_off(session: ReviewSession, cluster: int, image_ids) -> Edit:
    """Split the given images that sit in ``cluster`` off into a new cluster named as an automatic split's;
    the others (a selection spanning clusters, ids not in the run) stay where they are."""
    state, ids = session.state, np.asarray(image_ids, np.int64).reshape(-1)
    ids = ids[np.isin(ids, state.image_ids)]
    inside = ids[state.labels[state.positions(ids)] == cluster] if ids.size else ids
    parent = state.names.get(cluster)
    return session.split(cluster, inside, None if parent is None else split_name(parent))


def split_name(parent: str) -> str:
    """The new cluster's name: ``"<parent name> (split)"``, the parent's name shortened to fit."""
    return parent[:MAX_CLUSTER_NAME_LENGTH - len(SUFFIX)].rstrip() + SUFFIX


def _existing(session: ReviewSession, cluster) -> int:
    try:
        cluster = operator.index(cluster)
    except TypeError:
        raise InvalidInputError(f"a cluster id is an integer, not {cluster!r}.") from None
    if cluster not in session.state.names:
        raise InvalidInputError(f"cluster {cluster} does not exist in run {session.run_id} (it may have been merged "
                                "away); choose a cluster from the list.")
    return cluster
