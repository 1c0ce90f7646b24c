"""Review: a user's corrections of a run, kept as an append-only event log and replayed into a state.

Every edit is one row of the ``events`` table, committed in its own transaction before the call returns, so
a refresh, a crash or a SIGKILL never loses an acknowledged edit. The state (labels, verified and excluded
flags, cluster names; :mod:`tac_core.workspace.review_state`) is never stored: it is the run's assignments
with the log replayed on top. Events hold explicit image ids (an automatic split is recorded as the ids it
produced), so replay recomputes nothing.

Undo is global over a run's log, all sessions together: undo reverts the latest effective edit, redo
re-applies the most recently undone one, a new edit clears the redo stack. Undo and redo are events
themselves, so they survive restarts. Sessions on one run append to one log: before writing, a session
applies (inside the write transaction) what others wrote since it last looked, so it validates against the
current state and an undo never skips someone else's newer edit. Applying is incremental: each applied
edit keeps what it needs to be reverted, so no action replays the log.
"""
from __future__ import annotations

import json
import operator
import secrets
from typing import Callable, Iterable, Optional

import numpy as np
import pandas as pd

from ..errors import InvalidInputError
from .decisions import Decision, decided_mask, decision_of, moved_mask
from .review_log import touched
from .review_state import ASPECTS, Edit, ReviewState, Revert, effects
from .store import WorkspaceUnreadableError, to_json, utc_now, validate_name
from .workspace import Workspace
from .runs import MAX_CLUSTER_NAME_LENGTH, id_array, require_known_ids

MEMBER_ORDERS = ("confidence", "least_confident")
TOP_ANCHORS = 5


class ReviewSession:
    """One user's view of a run's review: loads the run once, replays the log, then applies edits as made."""

    def __init__(self, workspace: Workspace, run_id: int, session_id: Optional[str] = None) -> None:
        run = workspace.run(run_id)
        if run["status"] != "done":
            raise InvalidInputError(f"run {run_id} is {run['status']}; only a finished run can be reviewed.")
        self.workspace, self.run_id = workspace, run_id
        self.session_id = session_id or secrets.token_hex(6)
        assignments = workspace.run_assignments(run_id)
        self._paths = assignments[["path", "rel_path", "sha256"]]
        self.state = ReviewState.from_run(assignments, workspace.run_cluster_names(run_id),
                                          workspace.run_anchors(run_id))
        self._last_event_id = 0
        self._edits: dict[int, tuple[str, dict, str]] = {}  # event id -> kind, payload, text
        self._decisions: dict[int, Decision] = {}  # event id -> what a deciding edit decided
        self._reverts: dict[int, Revert] = {}
        self._touched: dict[int, tuple[list[int], int]] = {}  # event id -> clusters and image count it touched
        self._changed_at = dict.fromkeys(ASPECTS, 0)  # aspect -> id of the last event that changed it
        self._history: list[dict] = []
        self.refresh()

    # -- reading the log -------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Apply events other sessions appended since this one last looked; returns how many."""
        rows = self.workspace.connection().execute(
            "SELECT id, ts, kind, payload, session FROM events WHERE run_id = ? AND id > ? ORDER BY id",
            (self.run_id, self._last_event_id)).fetchall()
        for event_id, ts, kind, payload, session in rows:
            self._apply_event(event_id, ts, kind, json.loads(payload), session)
        return len(rows)

    def _apply_event(self, event_id: int, ts: str, kind: str, payload: dict, session: str) -> str:
        state = self.state
        if kind in ("undo", "redo"):
            target = payload["target"]
            stack, other = (state.effective, state.undone) if kind == "undo" else (state.undone, state.effective)
            if not stack or stack[-1] != target:
                raise WorkspaceUnreadableError(f"review event #{event_id} ({kind} of #{target}) does not match the "
                                               "log; the workspace database was changed outside TAC Studio.")
            if kind == "undo":
                self._reverts.pop(target)()
            else:
                self._reverts[target] = state.apply(*self._edits[target][:2])[0]
            other.append(stack.pop())
            text = f"{'undid' if kind == 'undo' else 'redid'} #{target}: {self._edits[target][2]}"
            self._touched[event_id] = self._touched[target]
            changed = effects(*self._edits[target][:2])  # an undo or redo changes what its target changed
        else:
            self._touched[event_id] = touched(kind, payload, state)
            self._reverts[event_id], text = state.apply(kind, payload)
            self._edits[event_id] = (kind, payload, text)
            decision = decision_of(kind, payload, state)
            if decision is not None:
                self._decisions[event_id] = decision
            state.effective.append(event_id)
            state.undone.clear()
            changed = effects(kind, payload)
        for aspect in changed:
            self._changed_at[aspect] = event_id
        clusters, images = self._touched[event_id]
        self._history.append({"event_id": event_id, "ts": ts, "session": session, "kind": kind, "text": text,
                              "clusters": clusters, "images": images})
        self._last_event_id = event_id
        return text

    # -- writing ---------------------------------------------------------------------------------------
    def _record(self, kind: str, build: Callable[[], dict], cluster_of: Callable[[dict], Optional[int]]) -> Edit:
        """Catch up with the log, validate and build the payload, commit the event, then apply it."""
        with self.workspace.transaction() as conn:
            self.refresh()
            payload_text = to_json(build(), f"{kind} edit")
            ts = utc_now()
            event_id = conn.execute("INSERT INTO events (run_id, ts, kind, payload, session) VALUES (?, ?, ?, ?, ?)",
                                    (self.run_id, ts, kind, payload_text, self.session_id)).lastrowid
        payload = json.loads(payload_text)  # exactly what a replay will see
        text = self._apply_event(event_id, ts, kind, payload, self.session_id)
        changed = frozenset(a for a in ASPECTS if self._changed_at[a] == event_id)
        return Edit(event_id, kind, text, cluster_of(payload), changed)

    def rename(self, cluster: int, name: str) -> Edit:
        return self._record("rename", lambda: {"cluster": self._cluster(cluster), "name": self._name(name)},
                            lambda p: p["cluster"])

    def merge(self, sources: int | Iterable[int], target: int) -> Edit:
        """Merge ``sources`` (one id or several) into ``target``, which keeps its id and name."""
        def build() -> dict:
            ids = [self._cluster(c) for c in ([sources] if isinstance(sources, (int, np.integer)) else sources)]
            if not ids:
                raise InvalidInputError("choose at least one cluster to merge.")
            goal = self._cluster(target)
            if goal in ids:
                raise InvalidInputError(f"cannot merge cluster {goal} with itself; choose other clusters.")
            if len(set(ids)) != len(ids):
                raise InvalidInputError(f"clusters {ids} list a cluster twice; give each once.")
            return {"sources": ids, "target": goal}
        return self._record("merge", build, lambda p: p["target"])

    def split(self, cluster: int, image_ids, name: Optional[str] = None) -> Edit:
        """Move some images of ``cluster`` into a new cluster (id: highest ever used + 1)."""
        def build() -> dict:
            source, ids = self._cluster(cluster), self._image_ids(image_ids)
            outside = ids[self.state.labels[self.state.positions(ids)] != source]
            if outside.size:
                raise InvalidInputError(f"{outside.size} image(s) are not in cluster {source}, e.g. image "
                                        f"{int(outside[0])}; split only images of that cluster.")
            new = self.state.next_cluster
            return {"cluster": source, "image_ids": ids.tolist(), "new_cluster": new,
                    "name": f"cluster {new}" if name is None else self._name(name)}
        return self._record("split", build, lambda p: p["new_cluster"])

    def move(self, image_ids, cluster: int, verify: bool = False) -> Edit:
        """Move images to ``cluster``; ``verify=True`` also marks them verified in the same event (a
        reviewer who chose an image's cluster has decided its label)."""
        return self._record("move", lambda: {"image_ids": self._image_ids(image_ids).tolist(),
                                             "cluster": self._cluster(cluster), "verify": bool(verify)},
                            lambda p: p["cluster"])

    def verify_images(self, image_ids, verified: bool = True) -> Edit:
        return self._record("verify_images", lambda: {"image_ids": self._image_ids(image_ids).tolist(),
                                                      "value": bool(verified)}, lambda p: None)

    def verify_cluster(self, cluster: int, verified: bool = True) -> Edit:
        return self._record("verify_cluster", lambda: {"cluster": self._cluster(cluster), "value": bool(verified)},
                            lambda p: p["cluster"])

    def exclude(self, image_ids, excluded: bool = True) -> Edit:
        return self._record("exclude", lambda: {"image_ids": self._image_ids(image_ids).tolist(),
                                                "value": bool(excluded)}, lambda p: None)

    def undo(self) -> Edit:
        """Revert the latest effective edit of any session."""
        return self._record("undo", lambda: {"target": self._top(self.state.effective, "undo")}, lambda p: None)

    def redo(self) -> Edit:
        """Re-apply the most recently undone edit (possible until a new edit is made)."""
        return self._record("redo", lambda: {"target": self._top(self.state.undone, "redo")}, lambda p: None)

    @property
    def can_undo(self) -> bool:
        return bool(self.state.effective)

    @property
    def can_redo(self) -> bool:
        return bool(self.state.undone)

    def changed_at(self, *aspects: str) -> int:
        """The id of the last event (of any session, applied, undone or redone) that changed one of ``aspects``
        (:data:`~tac_core.workspace.review_state.ASPECTS`; all when none are named), 0 when none did. Sessions
        on one run agree on it, so it keys caches of what depends on those aspects."""
        return max(self._changed_at[a] for a in (aspects or ASPECTS))

    @property
    def event_count(self) -> int:
        """Events of the run's log this session has applied (its own and other sessions')."""
        return len(self._history)

    @property
    def edit_count(self) -> int:
        """Edits in effect now (made and not undone)."""
        return len(self.state.effective)

    # -- views -----------------------------------------------------------------------------------------
    def clusters(self) -> pd.DataFrame:
        """One row per existing cluster: name, size, excluded, verified, verified_share, mean confidence and
        the top anchors as (term, score) pairs; ``verified_share`` counts images verified themselves or
        through their cluster, as verified-only export does."""
        state, ids = self.state, np.array(sorted(self.state.names), dtype=np.int64)
        width = max(state.next_cluster, 1)
        kept = ~state.excluded
        size = np.bincount(state.labels[kept], minlength=width)[ids]
        checked = np.bincount(state.labels[kept & state.counts_as_verified()], minlength=width)[ids]
        confidence = np.bincount(state.labels[kept], weights=state.confidence[kept], minlength=width)[ids]
        return pd.DataFrame({
            "cluster": ids, "name": [state.names[c] for c in ids], "size": size,
            "excluded": np.bincount(state.labels[state.excluded], minlength=width)[ids],
            "verified": [c in state.verified_clusters for c in ids],
            "verified_share": np.divide(checked, size, out=np.zeros(len(ids)), where=size > 0),
            "mean_confidence": np.divide(confidence, size, out=np.zeros(len(ids)), where=size > 0),
            "top_anchors": [state.anchors(c)[:TOP_ANCHORS] for c in ids]})

    def decided(self) -> np.ndarray:
        """Per image: decided by the reviewer (:mod:`tac_core.workspace.decisions`), with every session's edits."""
        return decided_mask(self.state, self._decisions)

    def moved(self) -> np.ndarray:
        """Per image: put in its cluster by a ``move`` in effect."""
        return moved_mask(self.state, self._decisions)

    def members(self, cluster: int, order: str = "confidence") -> pd.DataFrame:
        """The cluster's images, most confident first (``"confidence"``) or least confident first."""
        if order not in MEMBER_ORDERS:
            raise InvalidInputError(f"member order {order!r} is not one of {', '.join(MEMBER_ORDERS)}.")
        state, cluster = self.state, self._cluster(cluster)
        pos = np.flatnonzero(state.labels == cluster)
        key = state.confidence[pos] if order == "least_confident" else -state.confidence[pos]
        return self.images(pos[np.argsort(key, kind="stable")])

    def images(self, positions) -> pd.DataFrame:
        """One row per run position given, in that order: image_id, position, path, rel_path, sha256, cluster,
        confidence and the verified and excluded flags as they are now."""
        state, pos = self.state, np.asarray(positions, dtype=np.int64)
        frame = self._paths.iloc[pos].reset_index(drop=True)
        frame.insert(0, "image_id", state.image_ids[pos])
        frame.insert(1, "position", pos)
        return frame.assign(cluster=state.labels[pos], confidence=state.confidence[pos], verified=state.verified[pos],
                            excluded=state.excluded[pos])

    def anchors(self, cluster: int) -> list[tuple[str, float]]:
        """All of the cluster's anchors, best first (``clusters()`` shows the top 5)."""
        return self.state.anchors(self._cluster(cluster))

    def suggest_names(self, cluster: int, n: int = 3) -> list[str]:
        """Up to ``n`` of the cluster's best anchor terms not already naming another cluster."""
        cluster = self._cluster(cluster)
        taken = {name.casefold() for c, name in self.state.names.items() if c != cluster}
        terms = [term for term, _ in self.state.anchors(cluster) if term.casefold() not in taken]
        return list(dict.fromkeys(terms))[:n]

    def history(self) -> list[dict]:
        """Every event, oldest first: event_id, ts, session, kind, text, the clusters and number of images it
        touched (:func:`~tac_core.workspace.review_log.touched`) and whether it is undone now."""
        undone = set(self._edits) - set(self.state.effective)
        return [{**entry, "undone": entry["event_id"] in undone} for entry in self._history]

    # -- validation ------------------------------------------------------------------------------------
    def _cluster(self, cluster) -> int:
        try:
            cluster = operator.index(cluster)
        except TypeError:
            raise InvalidInputError(f"a cluster id is an integer, not {cluster!r}.") from None
        if cluster not in self.state.names:
            raise InvalidInputError(f"cluster {cluster} does not exist in run {self.run_id} (it may have been "
                                    "merged away); choose a cluster from the list.")
        return cluster

    def _image_ids(self, image_ids) -> np.ndarray:
        ids = id_array(image_ids)
        if ids.size == 0:
            raise InvalidInputError("no images were chosen; select at least one image.")
        require_known_ids(ids, self.state.image_ids, f"in run {self.run_id}")
        return ids

    @staticmethod
    def _name(name) -> str:
        return validate_name(name, "cluster name", MAX_CLUSTER_NAME_LENGTH)

    @staticmethod
    def _top(stack: list[int], action: str) -> int:
        if not stack:
            raise InvalidInputError(f"there is nothing to {action}.")
        return stack[-1]
