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
- Approvals (:mod:`tac_core.workspace.sign_off`) are kept here too, in ``sign_offs``; that module applies the
  sign-off events and withdraws the approvals an edit touches.
- An ``intake`` (:mod:`tac_core.workspace.intake`) appends images after the run's own (they are "new"), each
  in the cluster the payload gives, unverified; its novel images go to the unsorted bucket, a cluster the
  first intake that needs one creates. Undo removes the images again (undo is last-in, first-out, so no edit
  in effect names them then). Their run label is −1: the run's own result never held them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pandas as pd

from .sign_off import SignOffs
from .store import WorkspaceUnreadableError

EDIT_KINDS = ("rename", "merge", "split", "move", "verify_images", "verify_cluster", "exclude", "intake")
ASPECTS = ("labels", "names", "marks", "verified", "excluded", "approvals")  # what an edit can change: effects()
Revert = Callable[[], None]
TOP_ANCHORS = 5


def effects(kind: str, payload: dict) -> frozenset[str]:
    """The :data:`ASPECTS` of a state an edit changes (so a page redraws only what depends on them): labels
    (who is in which cluster), names (which clusters exist, their names and anchors), marks (which clusters
    are verified), the images' verified and excluded flags, and approvals (a sign-off, or an edit that withdraws
    one from the clusters it touches). An intake adds images: it changes everything."""
    if kind in ("approve", "withdraw"):
        return frozenset({"approvals"})
    if kind == "move":
        return frozenset({"labels", "verified", "approvals"} if payload.get("verify") else {"labels", "approvals"})
    changed = {"rename": {"names"}, "merge": {"labels", "names", "marks"}, "split": {"labels", "names"},
               "verify_images": {"verified"}, "verify_cluster": {"marks"}, "exclude": {"excluded"}}.get(kind)
    return frozenset(ASPECTS) if changed is None else frozenset(changed | {"approvals"})


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
    sign_offs: SignOffs = field(default_factory=SignOffs)  # approvals in effect, and withdrawn ones
    novelty: np.ndarray = field(default=None)  # per image: its novelty when an intake added it, else NaN
    batches: list[tuple[str, int, int]] = field(default_factory=list)  # intakes in effect: (batch, first position, count)
    bucket: Optional[int] = None  # the unsorted bucket's cluster id, when an intake made one
    extra_anchors: dict[int, list[tuple[str, float]]] = field(default_factory=dict)  # cluster -> anchors an edit gave it
    run_labels: np.ndarray = field(init=False, repr=False)  # the labels before any edit
    _order: np.ndarray = field(init=False, repr=False)  # image ids sorted, to map ids to positions fast
    _sorted_ids: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.novelty is None:
            self.novelty = np.full(len(self.labels), np.nan)
        self.run_labels = self.labels.copy()
        self.run_labels.setflags(write=False)
        self._index_ids()

    def _index_ids(self) -> None:
        self._order = np.argsort(self.image_ids, kind="stable")
        self._sorted_ids = self.image_ids[self._order]

    @property
    def n_run(self) -> int:
        """How many images the run itself holds (those an intake added come after them)."""
        return self.batches[0][1] if self.batches else len(self.labels)

    def new_mask(self) -> np.ndarray:
        """Per image: added after the run by an intake in effect."""
        return np.arange(len(self.labels)) >= self.n_run

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
        best: dict[str, float] = dict(self.extra_anchors.get(cluster, ()))
        for source in sorted(self.anchor_sources.get(cluster, ())):
            for term, score in self.base_anchors[source]:
                best[term] = max(score, best.get(term, score))
        return sorted(best.items(), key=lambda pair: (-pair[1], pair[0]))

    def apply(self, kind: str, payload: dict) -> tuple[Revert, str]:
        """Apply one edit; returns a function reverting exactly it and a sentence describing it."""
        if kind == "intake":  # its images are not in the state yet
            return self._intake(payload)
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
            return self._split(payload["cluster"], pos, payload["new_cluster"], payload["name"],
                               payload.get("anchors") or [])
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
            name, value = ("verified" if kind == "verify_images" else "excluded"), payload["value"]
            old = getattr(self, name)[pos]
            getattr(self, name)[pos] = value
            word = {("verify_images", True): "marked {} image(s) verified",
                    ("verify_images", False): "marked {} image(s) not verified",
                    ("exclude", True): "excluded {} image(s)", ("exclude", False): "included {} image(s) again"}
            # looked up at revert time: an intake in between replaces the arrays (and is undone first)
            return lambda: getattr(self, name).__setitem__(pos, old), word[kind, value].format(n)
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
        old_extra = {c: self.extra_anchors[c] for c in touched if c in self.extra_anchors}
        text = (f"merged {', '.join(f'cluster {c} {self.names[c]!r}' for c in sources)} into cluster {target} "
                f"{self.names[target]!r} ({len(pos)} image(s) moved)")
        self.labels[pos] = target
        self.anchor_sources[target] = frozenset().union(*(old_anchors[c] for c in touched))
        if old_extra:
            best: dict[str, float] = {}
            for pairs in old_extra.values():
                for term, score in pairs:
                    best[term] = max(score, best.get(term, score))
            self.extra_anchors[target] = sorted(best.items(), key=lambda pair: (-pair[1], pair[0]))
        self._set_cluster_verified(target, len(old_verified) == len(touched))
        for c in sources:
            del self.names[c], self.anchor_sources[c]
            self.extra_anchors.pop(c, None)
            self.verified_clusters.discard(c)

        def revert() -> None:
            self.labels[pos] = old_labels
            self.names.update(old_names)
            self.anchor_sources.update(old_anchors)
            for c in touched:
                self.extra_anchors.pop(c, None)
            self.extra_anchors.update(old_extra)
            self.verified_clusters.difference_update(touched)
            self.verified_clusters.update(old_verified)
        return revert, text

    def _split(self, cluster: int, pos: np.ndarray, new: int, name: str, anchors: list) -> tuple[Revert, str]:
        previous_next = self.next_cluster
        self.labels[pos] = new
        self.names[new], self.anchor_sources[new] = name, frozenset()
        if anchors:  # a split named from its own images' anchors (tac_core.workspace.intake.split_unsorted)
            self.extra_anchors[new] = [(term, float(score)) for term, score in anchors]
        self.next_cluster = max(self.next_cluster, new + 1)

        def revert() -> None:
            self.labels[pos] = cluster
            del self.names[new], self.anchor_sources[new]
            self.extra_anchors.pop(new, None)
            self.verified_clusters.discard(new)
            self.next_cluster = previous_next
        return revert, (f"split {len(pos)} image(s) off cluster {cluster} {self.names[cluster]!r} into new cluster "
                        f"{new} {name!r}")

    def _intake(self, payload: dict) -> tuple[Revert, str]:
        ids, n = np.asarray(payload["image_ids"], np.int64), len(self.labels)
        clusters = np.asarray(payload["clusters"], np.int64)
        before = (self.bucket, self.next_cluster)
        bucket = payload.get("bucket")
        if payload.get("new_bucket"):
            self.names[bucket], self.anchor_sources[bucket] = payload["bucket_name"], frozenset()
            self.next_cluster = max(self.next_cluster, bucket + 1)
        if bucket is not None:
            self.bucket = bucket
        self._resize(n, ids, clusters, np.asarray(payload["confidence"], np.float64),
                     np.asarray(payload["novelty"], np.float64))
        self.batches.append((payload["batch"], n, len(ids)))

        def revert() -> None:
            self.batches.pop()
            self._resize(n)
            if payload.get("new_bucket"):
                del self.names[bucket], self.anchor_sources[bucket]
                self.verified_clusters.discard(bucket)
            self.bucket, self.next_cluster = before
        novel = int((clusters == bucket).sum()) if bucket is not None else 0
        return revert, (f"added {len(ids)} new image(s) to the reviewed clusters"
                        + (f", {novel} of them to {self.names[bucket]!r}" if novel else ""))

    def _resize(self, n: int, ids=None, labels=None, confidence=None, novelty=None) -> None:
        """Keep the first ``n`` images, then append the given ones (unverified, not excluded)."""
        extra = 0 if ids is None else len(ids)

        def grow(array: np.ndarray, tail) -> np.ndarray:
            return array[:n].copy() if tail is None else np.concatenate([array[:n], tail])
        self.image_ids = grow(self.image_ids, ids)
        self.labels = grow(self.labels, labels)
        self.confidence = grow(self.confidence, confidence)
        self.novelty = grow(self.novelty, novelty)
        self.verified = grow(self.verified, None if ids is None else np.zeros(extra, bool))
        self.excluded = grow(self.excluded, None if ids is None else np.zeros(extra, bool))
        run_labels = grow(self.run_labels, None if ids is None else np.full(extra, -1, np.int64))
        run_labels.setflags(write=False)
        self.run_labels = run_labels
        self._index_ids()

    def _set_cluster_verified(self, cluster: int, value: bool) -> None:
        (self.verified_clusters.add if value else self.verified_clusters.discard)(cluster)


def cluster_table(state: ReviewState) -> pd.DataFrame:
    """One row per existing cluster: name, size, excluded, verified, verified_share, mean confidence, the top
    anchors as (term, score) pairs, and who approved it and when (``approved_by``, ``approved_at``: "" when not
    approved now); ``verified_share`` counts images verified themselves or through their cluster, as
    verified-only export does."""
    ids = np.array(sorted(state.names), dtype=np.int64)
    width, approved = max(state.next_cluster, 1), state.sign_offs.approved
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
        "top_anchors": [state.anchors(c)[:TOP_ANCHORS] for c in ids],
        "approved_by": [approved[c].stamp.user if c in approved else "" for c in ids],
        "approved_at": [approved[c].stamp.ts if c in approved else "" for c in ids]})
