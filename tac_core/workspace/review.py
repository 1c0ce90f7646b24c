"""Review: a user's corrections of a run, kept as an append-only event log and replayed into a state.

Every edit is one row of the ``events`` table, committed in its own transaction before the call returns, so
a refresh, a crash or a SIGKILL never loses an acknowledged edit. The state (labels, verified and excluded
flags, cluster names) is never stored: it is the run's assignments with the log replayed on top. Events hold
explicit image ids (an automatic split is recorded as the ids it produced), so replay recomputes nothing.

Undo is global over a run's log, all sessions together: undo reverts the latest effective edit, redo
re-applies the most recently undone one, a new edit clears the redo stack. Undo and redo are events
themselves, so they survive restarts. Sessions on one run append to one log: before writing, a session
applies (inside the write transaction) what others wrote since it last looked, so it validates against the
current state and an undo never skips someone else's newer edit. Applying is incremental: each applied
edit keeps what it needs to be reverted, so no action replays the log.

Decisions where the brief was silent:
- Cluster ids are stable: a merge keeps the target id; a split takes the highest id ever used + 1.
- Move, split and merge keep each image's own verified flag. A merged cluster is verified only when the
  target and all sources were; a split-off cluster starts unverified.
- A merged cluster shows the union of its sources' anchors (best score per term). A split-off cluster has no
  anchors: its parent's terms describe the parent's mix, and showing them on both halves would suggest the
  halves are alike. Re-clustering gives it its own.
- A cluster emptied by moves stays listed (size 0) until merged away; sizes count non-excluded members.
"""
from __future__ import annotations

import json
import operator
import secrets
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np
import pandas as pd

from ..errors import InvalidInputError
from .store import WorkspaceUnreadableError, to_json, utc_now, validate_name
from .workspace import Workspace
from .runs import MAX_CLUSTER_NAME_LENGTH, id_array, require_known_ids

EDIT_KINDS = ("rename", "merge", "split", "move", "verify_images", "verify_cluster", "exclude")
MEMBER_ORDERS = ("confidence", "least_confident")
TOP_ANCHORS = 5

Revert = Callable[[], None]


@dataclass(frozen=True)
class Edit:
    """What an action did: its event id, a sentence for the UI, and the cluster it produced or touched."""

    event_id: int
    kind: str
    text: str
    cluster: Optional[int] = None


@dataclass(eq=False)
class ReviewState:
    """A run's clustering with the review log applied; arrays are over the run's images by position."""

    image_ids: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    verified: np.ndarray
    excluded: np.ndarray
    names: dict[int, str]  # the clusters that exist now
    base_anchors: list[list[tuple[str, float]]]
    verified_clusters: set[int] = field(default_factory=set)
    anchor_sources: dict[int, frozenset[int]] = field(default_factory=dict)  # cluster -> run clusters it shows
    next_cluster: int = 0
    effective: list[int] = field(default_factory=list)  # applied edits not undone, oldest first (undo stack)
    undone: list[int] = field(default_factory=list)  # redo stack, most recently undone last
    _order: np.ndarray = field(init=False, repr=False)  # image ids sorted, to map ids to positions fast
    _sorted_ids: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._order = np.argsort(self.image_ids, kind="stable")
        self._sorted_ids = self.image_ids[self._order]

    @classmethod
    def from_run(cls, assignments: pd.DataFrame, names: dict[int, str],
                 anchors: list[list[tuple[str, float]]]) -> "ReviewState":
        n = len(assignments)
        return cls(np.array(assignments["image_id"], dtype=np.int64), np.array(assignments["cluster"], dtype=np.int64),
                   np.array(assignments["confidence"], dtype=np.float64), np.zeros(n, bool), np.zeros(n, bool),
                   dict(names), anchors, anchor_sources={c: frozenset({c}) for c in names},
                   next_cluster=max(names, default=-1) + 1)

    def positions(self, image_ids: np.ndarray) -> np.ndarray:
        """Positions of known image ids (callers validate with :func:`require_known_ids` first)."""
        return self._order[np.searchsorted(self._sorted_ids, image_ids)]

    def counts_as_verified(self) -> np.ndarray:
        """Per image: verified itself or a member of a verified cluster (what verified-only export takes)."""
        return self.verified | np.isin(self.labels, list(self.verified_clusters))

    def anchors(self, cluster: int) -> list[tuple[str, float]]:
        """The cluster's anchors, best first: its run clusters' anchors merged, best score per term."""
        best: dict[str, float] = {}
        for source in sorted(self.anchor_sources.get(cluster, ())):
            for term, score in self.base_anchors[source]:
                best[term] = max(score, best.get(term, score))
        return sorted(best.items(), key=lambda pair: (-pair[1], pair[0]))

    def apply(self, kind: str, payload: dict) -> tuple[Revert, str]:
        """Apply one edit; returns a function reverting exactly it and a sentence describing it."""
        pos = self.positions(np.asarray(payload.get("image_ids", []), dtype=np.int64))
        n = len(pos)
        if kind == "rename":
            cluster, old = payload["cluster"], self.names[payload["cluster"]]
            self.names[cluster] = payload["name"]
            return (lambda: self.names.__setitem__(cluster, old),
                    f"renamed cluster {cluster} from {old!r} to {payload['name']!r}")
        if kind == "merge":
            return self._merge(payload["sources"], payload["target"])
        if kind == "split":
            return self._split(payload["cluster"], pos, payload["new_cluster"], payload["name"])
        if kind == "move":
            cluster, old, old_verified = payload["cluster"], self.labels[pos], self.verified[pos]
            self.labels[pos] = cluster
            verify = payload.get("verify", False)  # logs written before the flag existed hold plain moves
            if verify:
                self.verified[pos] = True

            def revert() -> None:
                self.labels[pos] = old
                self.verified[pos] = old_verified
            return revert, (f"moved {n} image(s) to cluster {cluster} {self.names[cluster]!r}"
                            + (" and verified them" if verify else ""))
        if kind in ("verify_images", "exclude"):
            flags, value = (self.verified if kind == "verify_images" else self.excluded), payload["value"]
            old = flags[pos]
            flags[pos] = value
            word = {("verify_images", True): "marked {} image(s) verified",
                    ("verify_images", False): "marked {} image(s) not verified",
                    ("exclude", True): "excluded {} image(s)", ("exclude", False): "included {} image(s) again"}
            return lambda: flags.__setitem__(pos, old), word[kind, value].format(n)
        if kind == "verify_cluster":
            cluster, value = payload["cluster"], payload["value"]
            was = cluster in self.verified_clusters
            self._set_cluster_verified(cluster, value)
            return (lambda: self._set_cluster_verified(cluster, was),
                    f"marked cluster {cluster} {self.names[cluster]!r} {'verified' if value else 'not verified'}")
        raise WorkspaceUnreadableError(f"the review log holds an edit of unknown kind {kind!r}; update TAC "
                                       "Studio.")

    def _merge(self, sources: list[int], target: int) -> tuple[Revert, str]:
        pos = np.flatnonzero(np.isin(self.labels, sources))
        old_labels = self.labels[pos]
        touched = [*sources, target]
        old_names = {c: self.names[c] for c in sources}
        old_anchors = {c: self.anchor_sources[c] for c in touched}
        old_verified = {c for c in touched if c in self.verified_clusters}
        text = (f"merged {', '.join(f'cluster {c} {self.names[c]!r}' for c in sources)} into cluster {target} "
                f"{self.names[target]!r} ({len(pos)} image(s) moved)")
        self.labels[pos] = target
        self.anchor_sources[target] = frozenset().union(*(old_anchors[c] for c in touched))
        self._set_cluster_verified(target, len(old_verified) == len(touched))
        for c in sources:
            del self.names[c], self.anchor_sources[c]
            self.verified_clusters.discard(c)

        def revert() -> None:
            self.labels[pos] = old_labels
            self.names.update(old_names)
            self.anchor_sources.update(old_anchors)
            self.verified_clusters.difference_update(touched)
            self.verified_clusters.update(old_verified)
        return revert, text

    def _split(self, cluster: int, pos: np.ndarray, new: int, name: str) -> tuple[Revert, str]:
        previous_next = self.next_cluster
        self.labels[pos] = new
        self.names[new], self.anchor_sources[new] = name, frozenset()
        self.next_cluster = max(self.next_cluster, new + 1)

        def revert() -> None:
            self.labels[pos] = cluster
            del self.names[new], self.anchor_sources[new]
            self.verified_clusters.discard(new)
            self.next_cluster = previous_next
        return revert, (f"split {len(pos)} image(s) off cluster {cluster} {self.names[cluster]!r} into new cluster "
                        f"{new} {name!r}")

    def _set_cluster_verified(self, cluster: int, value: bool) -> None:
        (self.verified_clusters.add if value else self.verified_clusters.discard)(cluster)


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
        self._reverts: dict[int, Revert] = {}
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
        else:
            self._reverts[event_id], text = state.apply(kind, payload)
            self._edits[event_id] = (kind, payload, text)
            state.effective.append(event_id)
            state.undone.clear()
        self._history.append({"event_id": event_id, "ts": ts, "session": session, "kind": kind, "text": text})
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
        return Edit(event_id, kind, text, cluster_of(payload))

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

    def members(self, cluster: int, order: str = "confidence") -> pd.DataFrame:
        """The cluster's images, most confident first (``"confidence"``) or least confident first."""
        if order not in MEMBER_ORDERS:
            raise InvalidInputError(f"member order {order!r} is not one of {', '.join(MEMBER_ORDERS)}.")
        state, cluster = self.state, self._cluster(cluster)
        pos = np.flatnonzero(state.labels == cluster)
        key = state.confidence[pos] if order == "least_confident" else -state.confidence[pos]
        pos = pos[np.argsort(key, kind="stable")]
        frame = self._paths.iloc[pos].reset_index(drop=True)
        frame.insert(0, "image_id", state.image_ids[pos])
        frame.insert(1, "position", pos)
        return frame.assign(confidence=state.confidence[pos], verified=state.verified[pos],
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
        """Every event, oldest first: event_id, ts, session, kind, text and whether it is undone now."""
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
