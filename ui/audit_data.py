"""The audit queue's data: scores computed once per run and review state, kept as a snapshot while decided.

Scoring every image (``tac_core.cluster.audit``) costs O(n²) neighbour search: ~0.4 s for 2k images, ~5 s for 10k,
35–50 s for 50k 512-d images on two CPU cores. So the queue is a *snapshot*: computed for one review state,
cached per server process (``st.cache_resource``, keyed by run and a digest of labels, exclusions and
decisions, so a second browser session or a return to the page costs nothing), and kept while the reviewer
decides images — a decided image simply leaves the queue, nothing is rescored. The snapshot is rescored
automatically when the set of clusters changed (a merge or split elsewhere) and the run has at most
:data:`AUTO_RESCORE_MAX` images; otherwise on the "Rescore queue" button.

Inputs: the current labels (excluded → −1), verified = verified itself, in a verified cluster, or decided
(``ui.decisions``); the run's saved centres only while no label was edited (else the means of the current
clusters); head probabilities (trained runs) grouped by which run clusters a cluster is made of, unless a
split created a cluster the heads never saw (then free-mode scores). Reasons are computed without names
and named at display time, so a rename shows up at once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import numpy as np
import streamlit as st

from tac_core.cluster.audit import audit
from tac_core.cluster.contact_sheet import contact_sheet
from tac_core.numerics import cluster_unit_means
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import Workspace
from ui.decisions import DecisionLog
from ui.review_data import original_labels, run_array, state_digest

AUTO_RESCORE_MAX = 10_000
SNAPSHOTS = "audit_snapshots"
_CLUSTER_REF = re.compile(r"\bcluster (\d+)")
_IMAGE_REF = re.compile(r"\bimage (\d+)")


@dataclass(frozen=True)
class Snapshot:
    digest: str
    clusters: tuple[int, ...]
    queue: np.ndarray  # positions of the audited images, most suspicious first
    rank: np.ndarray  # per position: place in the queue (0 first), −1 when not audited
    score: np.ndarray
    suggested: np.ndarray
    reasons: list[str]
    confidence: np.ndarray
    edit_count: int
    mode: str


@st.cache_resource(show_spinner=False, max_entries=8)
def decision_log(workspace_path: str, run_id: int, _workspace: Workspace) -> DecisionLog:
    return DecisionLog(_workspace, run_id)


def decided_mask(workspace: Workspace, session: ReviewSession) -> np.ndarray:
    return decision_log(str(workspace.path), session.run_id, workspace).decided(session)


def _grouped(p: Optional[np.ndarray], session: ReviewSession) -> Optional[np.ndarray]:
    """Head probabilities per current cluster id (sum of the run clusters it is made of), or None."""
    state = session.state
    if p is None or any(not state.anchor_sources.get(c) for c in state.names):
        return None
    width = max(state.names) + 1
    out = np.zeros((len(p), width), np.float32)
    for cluster, sources in state.anchor_sources.items():
        cols = [s for s in sources if s < p.shape[1]]
        if cols:
            out[:, cluster] = p[:, cols].sum(axis=1)
    return out


@st.cache_resource(show_spinner=False, max_entries=8)
def _score(workspace_path: str, run_id: int, digest: str, _inputs: dict) -> dict:
    result = audit(**_inputs)
    audited = result.audited
    queue = result.order[audited[result.order]]
    rank = np.full(len(audited), -1, np.int64)
    rank[queue] = np.arange(len(queue))
    return {"queue": queue, "rank": rank, "score": result.score, "suggested": result.suggested_cluster,
            "reasons": result.reasons, "confidence": result.confidence, "mode": result.mode}


def snapshot(workspace: Workspace, session: ReviewSession, decided: np.ndarray, force: bool = False
             ) -> tuple[Optional[Snapshot], str]:
    """The queue snapshot for this run (computed when missing or stale by the rules above) and a note."""
    run_id, state = session.run_id, session.state
    x, t = run_array(workspace, run_id, "image_embeddings"), run_array(workspace, run_id, "counterparts")
    n = len(state.labels)
    if x is None or t is None or len(x) != n or len(t) != n:
        return None, "This run has no saved image embeddings and text counterparts, which the audit needs."
    store: dict = st.session_state.setdefault(SNAPSHOTS, {})
    key = (str(workspace.path), run_id)
    old: Optional[Snapshot] = store.get(key)
    clusters = tuple(sorted(state.names))
    digest = state_digest(session, decided)
    stale_structure = old is not None and old.clusters != clusters
    if old is not None and not force and (not stale_structure or n > AUTO_RESCORE_MAX):
        if old.digest == digest:
            return old, ""
        note = (f"Scored {max(0, session.edit_count - old.edit_count)} edit(s) ago; decided images have left the "
                "queue.")
        if stale_structure:
            note = "Clusters were merged or split since the queue was scored: rescore it for fresh suggestions."
        return old, note
    verified = state.counts_as_verified() | decided
    labels = np.where(state.excluded, -1, state.labels)
    centers = run_array(workspace, run_id, "cluster_centers")
    if centers is None or not np.array_equal(state.labels, original_labels(workspace, run_id)):
        centers = None
    inputs = {"image_embeddings": x, "counterparts": t, "labels": labels, "cluster_centers": centers,
              "verified": verified}
    p = _grouped(run_array(workspace, run_id, "probabilities"), session)
    q = _grouped(run_array(workspace, run_id, "text_probabilities"), session)
    if p is not None and q is not None:
        inputs.update(probabilities=p, text_probabilities=q)
    with st.spinner(f"Scoring {n:,} images for the audit queue…"):
        data = _score(str(workspace.path), run_id, digest, inputs)
    snap = Snapshot(digest, clusters, data["queue"], data["rank"], data["score"], data["suggested"],
                    data["reasons"], data["confidence"], session.edit_count, data["mode"])
    store[key] = snap
    return snap, ""


def name_reasons(text: str, session: ReviewSession, rel_paths) -> str:
    """The audit's reasons with clusters named as they are called now and images by file name."""
    names = session.state.names

    def cluster(match: re.Match) -> str:
        c = int(match.group(1))
        return f"'{names[c]}'" if c in names else f"cluster {c} (merged away)"

    def image(match: re.Match) -> str:
        pos = int(match.group(1))
        return f"image {rel_paths[pos]}" if 0 <= pos < len(rel_paths) else match.group(0)

    return _IMAGE_REF.sub(image, _CLUSTER_REF.sub(cluster, text))


# -- contact sheets --------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=4)
def _features(workspace_path: str, run_id: int, _x: np.ndarray, _t: np.ndarray) -> np.ndarray:
    def unit(a):
        a = np.asarray(a, np.float32)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    features = np.concatenate([unit(_x), unit(_t)], axis=1) / np.sqrt(2)
    features.setflags(write=False)
    return features


def _centers(workspace: Workspace, run_id: int, features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Cluster centres for contact sheets and their version, recomputed only when the clusters changed noticeably.

    Recomputing costs ~0.15 s at 50k images; one decided image hardly moves a centre, so the centres are
    kept while the set of clusters is the same and at most 1 % of the labels differ from when they were made.
    """
    store: dict = st.session_state.setdefault("audit_centers", {})
    key = (str(workspace.path), int(run_id))
    old = store.get(key)
    if old is not None:
        old_labels, centers, version = old
        same_clusters = np.array_equal(np.unique(old_labels[old_labels >= 0]), np.unique(labels[labels >= 0]))
        if same_clusters and np.count_nonzero(old_labels != labels) <= 0.01 * len(labels):
            return centers, version
    kept = labels >= 0
    centers = cluster_unit_means(features[kept], labels[kept], int(labels.max(initial=0)) + 1)
    version = (old[2] + 1) if old is not None else 0
    store[key] = (labels.copy(), centers, version)
    return centers, version


def sheet_positions(workspace: Workspace, session: ReviewSession, cluster: int, n: int = 6) -> Optional[dict]:
    """Positions of a cluster's most typical members, those nearest its boundary and the farthest ones.

    A sheet is computed once per cluster and version of the centres (for a 25k-image cluster that is ~0.2 s)
    and then only filtered: images that left the cluster or were excluded since drop out at once; images
    that joined it appear when the centres are next recomputed.
    """
    run_id, state = session.run_id, session.state
    x, t = run_array(workspace, run_id, "image_embeddings"), run_array(workspace, run_id, "counterparts")
    if x is None or t is None or len(x) != len(state.labels):
        return None
    features = _features(str(workspace.path), run_id, x, t)
    labels = np.where(state.excluded, -1, state.labels)
    centers, version = _centers(workspace, run_id, features, labels)
    empty = np.zeros(0, np.int64)
    if not 0 <= cluster < len(centers):  # every member excluded or moved away
        return {"typical": empty, "boundary": empty, "farthest": empty}
    key = (str(workspace.path), run_id, int(cluster), n, version)
    memo: dict = st.session_state.setdefault("audit_sheets", {})
    if key not in memo:
        sheet = contact_sheet(labels, int(cluster), features, centers, n=n)
        if len(memo) > 32:
            memo.clear()
        memo[key] = {"typical": sheet.typical, "boundary": sheet.boundary, "farthest": sheet.farthest}
    return {part: positions[labels[positions] == cluster] for part, positions in memo[key].items()}
