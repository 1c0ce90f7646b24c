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

Every event records who made it (:mod:`tac_core.workspace.access`; ``"unknown"`` before users existed). Editing
needs the ``reviewer`` role, checked inside each event's write transaction; a reviewer may undo or redo only
their own edit, approvers and admins anyone's. Approvals are events too (:mod:`tac_core.workspace.sign_off`).
"""
from __future__ import annotations

import json
import operator
import secrets
from typing import Callable, Iterable, Optional

import numpy as np
import pandas as pd

from ..errors import InvalidInputError, TacError
from .access import UNKNOWN, AccessDeniedError, User, user_key
from .decisions import Decision, decided_mask, decision_of, moved_mask
from .review_log import touched
from .review_state import ASPECTS, Edit, ReviewState, Revert, cluster_table, effects
from .sign_off import SIGN_OFF_KINDS, Stamp, apply_event, check_approve, check_withdraw, two_person_rule, valid_reason
from .store import WorkspaceUnreadableError, to_json, utc_now, validate_name
from .workspace import Workspace
from .runs import MAX_CLUSTER_NAME_LENGTH, automatic_name, id_array, require_known_ids

MEMBER_ORDERS = ("confidence", "least_confident")


class ReviewSession:
    """One user's view of a run's review: loads the run once, replays the log, then applies edits as made."""

    def __init__(self, workspace: Workspace, run_id: int, session_id: Optional[str] = None,
                 user: Optional[User] = None) -> None:
        """``user`` (default: the workspace handle's user) is who this session's edits are recorded for."""
        run = workspace.run(run_id)
        if run["status"] != "done":
            raise InvalidInputError(f"run {run_id} is {run['status']}; only a finished run can be reviewed.")
        self.workspace, self.run_id = workspace, run_id
        self.user: Optional[User] = workspace.user if user is None else user
        self.session_id = session_id or workspace.session or secrets.token_hex(6)
        assignments = workspace.run_assignments(run_id)
        self._paths = assignments[["image_id", "path", "rel_path", "sha256"]].set_index("image_id")  # by id: intake adds
        self.state = ReviewState.from_run(assignments, workspace.run_cluster_names(run_id),
                                          workspace.run_anchors(run_id))
        self._last_event_id = 0
        self._edits: dict[int, tuple[str, dict, str]] = {}  # event id -> kind, payload, text
        self._stamps: dict[int, Stamp] = {}  # edit event id -> who made it ("" before users existed) and when
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
            "SELECT id, ts, kind, payload, session, user_name, user_email FROM events WHERE run_id = ? AND id > ? "
            "ORDER BY id", (self.run_id, self._last_event_id)).fetchall()
        for event_id, ts, kind, payload, session, name, email in rows:
            self._apply_event(event_id, ts, kind, json.loads(payload), session, name, email)
        return len(rows)

    def _apply_event(self, event_id: int, ts: str, kind: str, payload: dict, session: str, name: str = "",
                     email: str = "") -> str:
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
                self._reverts[target] = self._apply_edit(target)[0]
            other.append(stack.pop())
            text = f"{'undid' if kind == 'undo' else 'redid'} #{target}: {self._edits[target][2]}"
            self._touched[event_id] = self._touched[target]
            changed = effects(*self._edits[target][:2])  # an undo or redo changes what its target changed
        else:
            self._touched[event_id] = touched(kind, payload, state)
            self._stamps[event_id] = Stamp(event_id, name, email, ts)
            self._edits[event_id] = (kind, payload, "")
            self._reverts[event_id], text = self._apply_edit(event_id)
            if kind == "intake":
                self._add_paths(payload["image_ids"])
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
        self._history.append({"event_id": event_id, "ts": ts, "session": session, "user": name or UNKNOWN,
                              "email": email, "kind": kind, "text": text, "clusters": clusters, "images": images})
        self._last_event_id = event_id
        return text

    def _apply_edit(self, event_id: int) -> tuple[Revert, str]:
        """Apply (or re-apply, for a redo) the edit ``event_id`` with its effect on approvals."""
        kind, payload, _ = self._edits[event_id]
        return apply_event(self.state, kind, payload, self._touched[event_id][0], self._stamps[event_id])

    # -- writing ---------------------------------------------------------------------------------------
    def _record(self, kind: str, build: Callable[[], dict], cluster_of: Callable[[dict], Optional[int]],
                action: str = "edit") -> Edit:
        """Catch up with the log, check ``action`` is allowed, build the payload, commit the event, then apply it."""
        with self.workspace.transaction() as conn:
            self.refresh()
            user = self.workspace.require(action, self.user, conn)
            payload_text = to_json(build(), f"{kind} edit")
            ts = utc_now()
            event_id = conn.execute("INSERT INTO events (run_id, ts, kind, payload, session, user_name, user_email) "
                                    "VALUES (?, ?, ?, ?, ?, ?, ?)", (self.run_id, ts, kind, payload_text,
                                                                     self.session_id, user.name, user.email)).lastrowid
        payload = json.loads(payload_text)  # exactly what a replay will see
        text = self._apply_event(event_id, ts, kind, payload, self.session_id, user.name, user.email)
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

    def split(self, cluster: int, image_ids, name: Optional[str] = None,
              anchors: Optional[list[tuple[str, float]]] = None) -> Edit:
        """Move some images of ``cluster`` into a new cluster (id: highest ever used + 1); ``anchors`` give it
        text anchors of its own ((term, score) pairs, best first; default none)."""
        def build() -> dict:
            source, ids = self._cluster(cluster), self._image_ids(image_ids)
            outside = ids[self.state.labels[self.state.positions(ids)] != source]
            if outside.size:
                raise InvalidInputError(f"{outside.size} image(s) are not in cluster {source}, e.g. image "
                                        f"{int(outside[0])}; split only images of that cluster.")
            new = self.state.next_cluster
            payload = {"cluster": source, "image_ids": ids.tolist(), "new_cluster": new,
                       "name": automatic_name(new) if name is None else self._name(name)}
            if anchors:
                payload["anchors"] = [[str(term), float(score)] for term, score in anchors]
            return payload
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

    def approve(self, cluster: int) -> Edit:
        """Sign ``cluster`` off (approvers and admins; under the two-person rule, not its last editor)."""
        return self._record("approve", lambda: {"cluster": self._sign_off_target(cluster, "approve")},
                            lambda p: p["cluster"], action="sign_off")

    def withdraw(self, cluster: int, reason: str = "") -> Edit:
        """Take the approval of ``cluster`` back (approvers and admins), saying why if you like."""
        return self._record("withdraw", lambda: {"cluster": self._sign_off_target(cluster, "withdraw"),
                                                 "reason": valid_reason(reason)}, lambda p: p["cluster"],
                            action="sign_off")

    def intake(self, build: Callable[[ReviewState], dict]) -> Edit:
        """Record images added after the run as one ``intake`` event; ``build`` (:mod:`tac_core.workspace.intake`)
        makes its payload from the state inside the write transaction, after other sessions' edits."""
        def checked() -> dict:
            payload = build(self.state)
            ids = id_array(payload["image_ids"])
            if ids.size == 0:
                raise InvalidInputError("there are no new images to add to this review.")
            inside = ids[np.isin(ids, self.state.image_ids)]
            if inside.size:
                raise InvalidInputError(f"image {int(inside[0])} is already in the review of run {self.run_id}.")
            known = set(self.state.names) | ({payload["bucket"]} if payload.get("new_bucket") else set())
            unknown = set(payload["clusters"]) - known
            if unknown:
                raise InvalidInputError(f"cluster {min(unknown)} does not exist in run {self.run_id}.")
            if payload.get("new_bucket"):
                payload["bucket_name"] = self._name(payload["bucket_name"])
            return payload
        return self._record("intake", checked, lambda p: p.get("bucket"))

    def undo(self) -> Edit:
        """Revert the latest effective edit of any session (your own, unless you are an approver or admin)."""
        return self._record("undo", lambda: {"target": self._own(self._top(self.state.effective, "undo"), "undo")},
                            lambda p: None)

    def redo(self) -> Edit:
        """Re-apply the most recently undone edit (possible until a new edit is made; same rule as undo)."""
        return self._record("redo", lambda: {"target": self._own(self._top(self.state.undone, "redo"), "redo")},
                            lambda p: None)

    def refusal(self, action: str = "edit") -> str:
        """Why this session's user may not ``action`` ("edit", "undo" or "redo") now, or "" when they may; for a
        front end to disable a control and say why (the action itself checks again)."""
        try:
            self.workspace.require("edit", self.user)
            stack = {"undo": self.state.effective, "redo": self.state.undone}.get(action)
            if stack:
                self._own(stack[-1], action)
        except AccessDeniedError as exc:
            return str(exc)
        return ""

    def sign_off_refusal(self, cluster: int, action: str = "approve") -> str:
        """Why this session's user may not ``action`` ("approve" or "withdraw") ``cluster`` now, or ""."""
        try:
            self.workspace.require("sign_off", self.user)
            self._sign_off_target(cluster, action)
        except TacError as exc:
            return str(exc)
        return ""

    def last_edit(self, cluster: int) -> Optional[tuple[int, str]]:
        """The latest edit in effect that touched ``cluster``, as (event id, author), or None when none did."""
        for event_id in reversed(self.state.effective):
            if self._edits[event_id][0] not in SIGN_OFF_KINDS and cluster in self._touched[event_id][0]:
                return event_id, self.author_of(event_id)
        return None

    def author_of(self, event_id: int) -> str:
        """Who made the edit ``event_id`` ("" when the log has no user: written before users existed)."""
        stamp = self._stamps.get(event_id)
        return stamp.user if stamp else ""

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
        """One row per existing cluster (:func:`~tac_core.workspace.review_state.cluster_table`)."""
        return cluster_table(self.state)

    def decided(self) -> np.ndarray:
        """Per image: decided by the reviewer (:mod:`tac_core.workspace.decisions`), with every session's edits."""
        return decided_mask(self.state, self._decisions)

    def moved(self) -> np.ndarray:
        """Per image: put in its cluster by a ``move`` in effect."""
        return moved_mask(self.state, self._decisions)

    def members(self, cluster: int, order: str = "confidence") -> pd.DataFrame:
        """The cluster's images, most confident first (``"confidence"``) or least confident first."""
        return self.images(self.member_positions(cluster, order))

    def member_positions(self, cluster: int, order: str = "confidence") -> np.ndarray:
        """Their positions, in that order: cheap (a page of a large cluster needs :meth:`images` rows for it only)."""
        if order not in MEMBER_ORDERS:
            raise InvalidInputError(f"member order {order!r} is not one of {', '.join(MEMBER_ORDERS)}.")
        state, cluster = self.state, self._cluster(cluster)
        pos = np.flatnonzero(state.labels == cluster)
        key = state.confidence[pos] if order == "least_confident" else -state.confidence[pos]
        return pos[np.argsort(key, kind="stable")]

    def images(self, positions) -> pd.DataFrame:
        """One row per position given, in that order: image_id, position, path, rel_path, sha256, cluster,
        confidence, the verified and excluded flags as they are now, and ``new`` (added by an intake)."""
        state, pos = self.state, np.asarray(positions, dtype=np.int64)
        frame = self._paths.loc[state.image_ids[pos]].reset_index(drop=True)
        frame.insert(0, "image_id", state.image_ids[pos])
        frame.insert(1, "position", pos)
        return frame.assign(cluster=state.labels[pos], confidence=state.confidence[pos], verified=state.verified[pos],
                            excluded=state.excluded[pos], new=pos >= state.n_run)

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
        """Every event, oldest first: event_id, ts, session, user (``"unknown"`` before users existed), email,
        kind, text, the clusters and number of images it touched (:func:`~tac_core.workspace.review_log.touched`)
        and whether it is undone now."""
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

    def _sign_off_target(self, cluster, action: str) -> int:
        """``cluster`` if it may be approved (``action`` "approve") or its approval withdrawn now, else refused."""
        goal = self._cluster(cluster)
        if action == "approve":
            check_approve(self.state, goal, self.user, two_person_rule(self.workspace), self.last_edit(goal))
        else:
            check_withdraw(self.state, goal)
        return goal

    def _add_paths(self, image_ids) -> None:
        missing = np.setdiff1d(np.asarray(image_ids, np.int64), self._paths.index.to_numpy())
        if missing.size:
            rows = self.workspace.images().set_index("id").loc[missing, ["path", "rel_path", "sha256"]]
            self._paths = pd.concat([self._paths, rows.rename_axis("image_id")])

    @staticmethod
    def _name(name) -> str:
        return validate_name(name, "cluster name", MAX_CLUSTER_NAME_LENGTH)

    def _own(self, event_id: int, action: str) -> int:
        """The edit ``event_id`` if this session's user made it or may undo others' edits, else refused; undoing
        or redoing a sign-off needs the ``sign_off`` role too."""
        if self._edits[event_id][0] in SIGN_OFF_KINDS:
            self.workspace.require("sign_off", self.user)
        author = self.author_of(event_id)
        if (self.user is not None and author and user_key(author) == self.user.key) or \
                self.workspace.allows("undo_others", self.user):
            return event_id
        raise AccessDeniedError(f"the edit to {action} (#{event_id}) was made by {author or UNKNOWN}; only an "
                                "approver or an admin may undo or redo another person's edit.")

    @staticmethod
    def _top(stack: list[int], action: str) -> int:
        if not stack:
            raise InvalidInputError(f"there is nothing to {action}.")
        return stack[-1]
