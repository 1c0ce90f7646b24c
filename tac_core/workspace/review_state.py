"""A run's clustering with its review log applied: labels, verified and excluded flags, names and anchors.

:class:`ReviewState` applies one edit at a time and returns what reverts exactly it, so
:class:`~tac_core.workspace.review.ReviewSession` replays, undoes and redoes the log without recomputing
anything. Arrays are over the run's images by position.

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

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pandas as pd

from .store import WorkspaceUnreadableError

EDIT_KINDS = ("rename", "merge", "split", "move", "verify_images", "verify_cluster", "exclude")
ASPECTS = ("labels", "names", "marks", "verified", "excluded")  # what an edit can change: see :func:`effects`
Revert = Callable[[], None]


def effects(kind: str, payload: dict) -> frozenset[str]:
    """The :data:`ASPECTS` of a state an edit changes (so a page redraws only what depends on them): labels
    (who is in which cluster), names (which clusters exist, their names and anchors), marks (which clusters
    are verified), and the images' verified and excluded flags."""
    if kind == "move":
        return frozenset({"labels", "verified"} if payload.get("verify") else {"labels"})
    return frozenset({"rename": {"names"}, "merge": {"labels", "names", "marks"}, "split": {"labels", "names"},
                      "verify_images": {"verified"}, "verify_cluster": {"marks"},
                      "exclude": {"excluded"}}.get(kind, ASPECTS))


@dataclass(frozen=True)
class Edit:
    """What an action did: its event id, a sentence for the UI, the cluster it produced or touched, and what it
    changed (:func:`effects`; an undo or redo changes what its target did)."""

    event_id: int
    kind: str
    text: str
    cluster: Optional[int] = None
    changes: frozenset[str] = frozenset(ASPECTS)


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
    run_labels: np.ndarray = field(init=False, repr=False)  # the labels before any edit
    _order: np.ndarray = field(init=False, repr=False)  # image ids sorted, to map ids to positions fast
    _sorted_ids: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.run_labels = self.labels.copy()
        self.run_labels.setflags(write=False)
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

    def labels_edited(self) -> bool:
        """Whether any image's cluster differs from the run's own result (a move, merge or split in effect)."""
        return not np.array_equal(self.labels, self.run_labels)

    def included_labels(self) -> np.ndarray:
        """Labels with excluded images as −1: what the audit, centres and contact sheets count."""
        return np.where(self.excluded, -1, self.labels)

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
