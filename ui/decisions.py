"""The reviewer's per-image decisions read from the review log, and re-clustering a run with them.

No Streamlit here: the Audit page calls these, tests call them directly.

**Decided images.** An image is *decided* when an edit in effect (made and not undone) names it explicitly:
``move`` (the reviewer chose its cluster), ``verify_images`` (kept where it is) or ``exclude``; a later
``verify_images``/``exclude`` with value False (un-verify, include again) takes the decision back. Members of
a verified cluster count as decided too (the reviewer confirmed the whole cluster). Merges, splits and
renames decide nothing about single images. The audit's "n of m reviewed" counts decided queue images.

**Re-cluster with my decisions** (:func:`recluster_into_new_run`) builds a NEW run (the old one and its log
stay as they are, so the reviewer can go back):
- fixed (keep their cluster): verified images, members of verified clusters, and moved images — a move is a
  decision about that image, so re-clustering must not move it back; verified clusters are closed
  (``tac_core.cluster.recluster``). Excluded images stay excluded. Everything else is re-assigned (free mode:
  constrained spherical k-means on [image, counterpart]).
- the new run has the same images in the same order, the same layout (so the map does not jump), the same
  embeddings and counterparts (hard links when the file system allows, else copies), new centres and
  confidences. Clusters are renumbered 0..K'-1 in the order of their old ids; names carry over; anchors
  carry over (a merged cluster's union; a split-off cluster has none until the next full clustering).
- the decisions carry over as the first events of the new run's log, written by session
  ``"carried from run <id>"``: one ``verify_images`` (every fixed image that was verified or moved), one
  ``verify_cluster`` per verified cluster, one ``exclude``. They are ordinary events, so they can be undone.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from tac_core.errors import InvalidInputError
from tac_core.numerics import cluster_unit_means, unit_rows_array
from tac_core.cluster.recluster import recluster
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import Workspace

DECIDING = ("move", "verify_images", "exclude")
CARRIED_ARRAYS = ("image_embeddings", "counterparts", "projection")


class DecisionLog:
    """Explicit per-image decisions of one run's log, read incrementally (the log is append-only)."""

    def __init__(self, workspace: Workspace, run_id: int) -> None:
        self.workspace, self.run_id = workspace, int(run_id)
        self._last = 0
        self._edits: dict[int, tuple[str, np.ndarray, bool]] = {}  # event id -> kind, image ids, value
        self._lock = threading.Lock()

    def _catch_up(self) -> None:
        rows = self.workspace.connection().execute(
            "SELECT id, kind, payload FROM events WHERE run_id = ? AND id > ? ORDER BY id",
            (self.run_id, self._last)).fetchall()
        for event_id, kind, payload in rows:
            if kind in DECIDING:
                data = json.loads(payload)
                self._edits[event_id] = (kind, np.asarray(data["image_ids"], np.int64), bool(data.get("value", True)))
            self._last = event_id

    def decided(self, session: ReviewSession) -> np.ndarray:
        """Per image of the run (by position): decided by an explicit edit in effect, or in a verified cluster."""
        with self._lock:
            self._catch_up()
            edits = dict(self._edits)
        state = session.state
        mask = np.zeros(len(state.labels), bool)
        effective = sorted(e for e in state.effective if e in edits)  # edits in effect apply in id order
        for event_id in effective:
            kind, ids, value = edits[event_id]
            pos = state.positions(ids)
            mask[pos] = True if kind == "move" else value
        if state.verified_clusters:
            mask |= np.isin(state.labels, list(state.verified_clusters))
        return mask

    def moved(self, session: ReviewSession) -> np.ndarray:
        """Per image: named by a ``move`` in effect (the reviewer chose its cluster)."""
        with self._lock:
            self._catch_up()
            edits = dict(self._edits)
        state = session.state
        mask = np.zeros(len(state.labels), bool)
        for event_id in state.effective:
            if event_id in edits and edits[event_id][0] == "move":
                mask[state.positions(edits[event_id][1])] = True
        return mask


@dataclass(frozen=True)
class ReclusterOutcome:
    """The new run and what changed: ``changes`` has from/to cluster ids and names and a count per flow."""

    run_id: int
    parent_run_id: int
    moved: int
    fixed: int
    changes: pd.DataFrame
    vanished: list[str]


def recluster_into_new_run(workspace: Workspace, session: ReviewSession, log: DecisionLog,
                           random_state: int = 0) -> ReclusterOutcome:
    """Re-assign every undecided image of the session's run into a new run; see the module docstring."""
    session.refresh()
    state, parent = session.state, session.run_id
    x = workspace.load_run_array(parent, "image_embeddings")
    t = workspace.load_run_array(parent, "counterparts")
    n = len(state.labels)
    if x is None or t is None or len(x) != n or len(t) != n:
        raise InvalidInputError(f"run {parent} has no saved image embeddings and text counterparts, which "
                                "re-clustering needs; run the clustering again.")
    moved_by_user = log.moved(session)
    explicit = (state.verified | moved_by_user) & ~state.excluded
    result = recluster(x, t, state.labels, verified=explicit, verified_clusters=sorted(state.verified_clusters),
                       excluded=state.excluded, mode="free", random_state=random_state)
    new_labels = np.where(state.excluded, state.labels, result.labels)  # excluded images keep their cluster
    old_ids = sorted(set(np.unique(new_labels).tolist()))
    compact = {old: new for new, old in enumerate(old_ids)}
    labels = np.array([compact[c] for c in new_labels.tolist()], np.int64)
    names = [state.names[c] for c in old_ids]
    anchors = [session.anchors(c) for c in old_ids]
    features = np.concatenate([unit_rows_array(x), unit_rows_array(t)], axis=1) / np.sqrt(2)
    kept = ~state.excluded
    centers = cluster_unit_means(features[kept], labels[kept], len(old_ids))
    params = dict(workspace.run(parent)["params"])
    params["recluster"] = {"parent_run_id": parent, "mode": "free", "fixed_images": int(result.fixed.sum()),
                           "closed_clusters": sorted(int(c) for c in state.verified_clusters),
                           "excluded": int(state.excluded.sum()), "moved": int(result.moved),
                           "random_state": random_state}
    run_id = workspace.create_run(params, state.image_ids, parent_run_id=parent)
    for name in CARRIED_ARRAYS:
        _carry_array(workspace, parent, run_id, name)
    workspace.save_run_result(run_id, state.image_ids, labels, result.confidence, anchors,
                              arrays={"cluster_centers": centers, "confidence": result.confidence},
                              cluster_names=names)
    _carry_decisions(workspace, run_id, parent, state, explicit, compact)
    return ReclusterOutcome(run_id, parent, int(result.moved), int(result.fixed.sum()),
                            _changes(result.transitions, state.names), [state.names[c] for c in result.vanished])


def _carry_array(workspace: Workspace, parent: int, child: int, name: str) -> None:
    source = workspace.run_dir(parent) / f"{name}.npy"
    if not source.is_file():
        return
    target = workspace.run_dir(child) / f"{name}.npy"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # arrays are only ever replaced, never changed in place: sharing is safe
    except OSError:
        workspace.save_run_array(child, name, workspace.load_run_array(parent, name))


def _carry_decisions(workspace: Workspace, run_id: int, parent: int, state, explicit: np.ndarray,
                     compact: dict[int, int]) -> None:
    carried = ReviewSession(workspace, run_id, session_id=f"carried from run {parent}")
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


def existing_ids(session: ReviewSession) -> list[int]:
    return sorted(session.state.names)


def name_of(session: ReviewSession, cluster: Optional[int]) -> str:
    if cluster is None or cluster < 0:
        return "—"
    return session.state.names.get(int(cluster), f"cluster {cluster} (merged away)")
