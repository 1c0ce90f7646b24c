"""Re-cluster with my decisions: a NEW run from a reviewed one, keeping every decision the reviewer made.

The old run and its log stay as they are, so the reviewer can go back.
- Fixed (keep their cluster): verified images, members of verified clusters, and moved images — a move is a
  decision about that image (:mod:`tac_core.workspace.decisions`), so re-clustering must not move it back;
  verified clusters are closed (:mod:`tac_core.cluster.recluster`). Excluded images stay excluded.
  Everything else is re-assigned (free mode: constrained spherical k-means on [image, counterpart]).
- The new run has the same images in the same order (those intakes added after the run's own), the same
  layout (so the map does not jump), the same embeddings, counterparts, text space, summary and fitted map
  (hard links when the file system allows, else copies; arrays with intake images are written whole), new
  centres and confidences. Clusters are renumbered 0..K'-1 in the order of their old ids; names carry over; anchors
  carry over (a merged cluster's union; a split-off cluster has none until the next full clustering).
- The decisions carry over as the first events of the new run's log, written by session
  ``"carried from run <id>"`` in the name of the user who re-clustered: one ``verify_images`` (every fixed image that was verified or moved), one
  ``verify_cluster`` per verified cluster, one ``exclude``. They are ordinary events, so they can be undone.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..cluster.projection import COORDINATES_FILE, MODELS_FILE
from ..cluster.recluster import recluster
from ..errors import InvalidInputError
from ..numerics import cluster_unit_means, tac_features
from .intake import TEXT_SPACE_ARRAY, session_arrays
from .review import ReviewSession
from .review_state import ReviewState
from .run_layout import MAP_FOLDER
from .runs import SUMMARY_FILE
from .workspace import Workspace

CARRIED_ARRAYS = ("image_embeddings", "counterparts", "projection", TEXT_SPACE_ARRAY)
CARRIED_FILES = (SUMMARY_FILE, f"{MAP_FOLDER}/{COORDINATES_FILE}", f"{MAP_FOLDER}/{MODELS_FILE}")


@dataclass(frozen=True)
class ReclusterOutcome:
    """The new run and what changed: ``changes`` has from/to cluster ids and names and a count per flow."""

    run_id: int
    parent_run_id: int
    moved: int
    fixed: int
    changes: pd.DataFrame
    vanished: list[str]


def recluster_into_new_run(session: ReviewSession, random_state: int = 0) -> ReclusterOutcome:
    """Re-assign every undecided image of the session's run into a new run, as the session's user (a reviewer
    or higher: it starts a run); see the module docstring."""
    session.refresh()
    workspace = session.workspace.as_user(session.user, session.workspace.session)
    workspace.require("run")
    state, parent = session.state, session.run_id
    arrays = session_arrays(session)  # the run's images and those intakes added
    x, t = arrays("image_embeddings"), arrays("counterparts")
    n = len(state.labels)
    if x is None or t is None or len(x) != n or len(t) != n:
        raise InvalidInputError(f"run {parent} has no saved image embeddings and text counterparts, which "
                                "re-clustering needs; run the clustering again.")
    explicit = (state.verified | session.moved()) & ~state.excluded
    result = recluster(x, t, state.labels, verified=explicit, verified_clusters=sorted(state.verified_clusters),
                       excluded=state.excluded, mode="free", random_state=random_state)
    new_labels = np.where(state.excluded, state.labels, result.labels)  # excluded images keep their cluster
    old_ids = sorted(set(np.unique(new_labels).tolist()))
    compact = {old: new for new, old in enumerate(old_ids)}
    labels = np.array([compact[c] for c in new_labels.tolist()], np.int64)
    kept = ~state.excluded
    centers = cluster_unit_means(tac_features(x, t)[kept], labels[kept], len(old_ids))
    params = dict(workspace.run(parent)["params"])
    params["recluster"] = {"parent_run_id": parent, "mode": "free", "fixed_images": int(result.fixed.sum()),
                           "closed_clusters": sorted(int(c) for c in state.verified_clusters),
                           "excluded": int(state.excluded.sum()), "moved": int(result.moved),
                           "random_state": random_state}
    run_id = workspace.create_run(params, state.image_ids, parent_run_id=parent)
    for name in CARRIED_ARRAYS:
        if state.batches and name != TEXT_SPACE_ARRAY:
            array = arrays(name)
            if array is not None:
                workspace.save_run_array(run_id, name, array)
        else:
            _carry_file(workspace, parent, run_id, f"{name}.npy")
    for name in CARRIED_FILES:  # τ and the map, so later batches can be sorted into the new run too
        _carry_file(workspace, parent, run_id, name)
    workspace.save_run_result(run_id, state.image_ids, labels, result.confidence,
                              [session.anchors(c) for c in old_ids],
                              arrays={"cluster_centers": centers, "confidence": result.confidence},
                              cluster_names=[state.names[c] for c in old_ids])
    _carry_decisions(workspace, run_id, parent, state, explicit, compact)
    return ReclusterOutcome(run_id, parent, int(result.moved), int(result.fixed.sum()),
                            _changes(result.transitions, state.names), [state.names[c] for c in result.vanished])


def _carry_file(workspace: Workspace, parent: int, child: int, name: str) -> None:
    source = workspace.run_dir(parent) / name
    if not source.is_file():
        return
    target = workspace.run_dir(child) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # run files are only ever replaced, never changed in place: sharing is safe
    except OSError:
        shutil.copyfile(source, target)


def _carry_decisions(workspace: Workspace, run_id: int, parent: int, state: ReviewState, explicit: np.ndarray,
                     compact: dict[int, int]) -> None:
    carried = ReviewSession(workspace, run_id, session_id=f"carried from run {parent}", user=workspace.user)
    if explicit.any():
        carried.verify_images(state.image_ids[explicit])
    for cluster in sorted(state.verified_clusters):
        if cluster in compact:
            carried.verify_cluster(compact[cluster])
    if state.excluded.any():
        carried.exclude(state.image_ids[state.excluded])


def _changes(transitions: dict, names: dict[int, str]) -> pd.DataFrame:
    rows = sorted(((a, b, c) for (a, b), c in transitions.items()), key=lambda r: (-r[2], r[0], r[1]))
    return pd.DataFrame({"from_id": [a for a, _, _ in rows], "from": [names.get(a, f"cluster {a}") for a, _, _ in rows],
                         "to_id": [b for _, b, _ in rows], "to": [names.get(b, f"cluster {b}") for _, b, _ in rows],
                         "images": [c for _, _, c in rows]})
