"""The Audit page's caches around the engine's audit (:mod:`tac_core.workspace.review_audit`).

What is scored, and by which rules, is the engine's. Scoring costs O(n²) neighbour search: ~0.4 s for 2k
images, ~5 s for 10k, 35–50 s for 50k 512-d images on two CPU cores. So the page keeps a *snapshot*: the
queue scored for one review state, cached per server process (``st.cache_resource``, keyed by run and a digest
of labels, exclusions and decisions, so a second browser session or a return to the page costs nothing), and
kept while the reviewer decides images — a decided image simply leaves the queue, nothing is rescored. The
snapshot is rescored automatically when the set of clusters changed (a merge or split elsewhere) and the run
has at most :data:`AUTO_RESCORE_MAX` images; otherwise on the "Rescore queue" button. Reasons are named at
display time, so a rename shows up at once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import streamlit as st

from tac_core.cluster.contact_sheet import contact_sheet
from tac_core.numerics import tac_features
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.review_audit import AuditQueue, RunArrays, audit_session, can_audit, current_centers
from tac_core.workspace.workspace import Workspace
from ui.review_batches import batches_of, state_array
from ui.review_data import run_array, state_digest

AUTO_RESCORE_MAX = 10_000
SNAPSHOTS = "audit_snapshots"
_CLUSTER_REF = re.compile(r"\bcluster (\d+)")
_IMAGE_REF = re.compile(r"\bimage (\d+)")


@dataclass(frozen=True)
class Snapshot:
    """The queue scored for one review state (``digest``), with the clusters and edit count it was scored at."""

    digest: str
    clusters: tuple[int, ...]
    edit_count: int
    audit: AuditQueue


def cached_arrays(workspace: Workspace, run_id: int) -> RunArrays:
    """The run's arrays through the page's shared, read-only cache."""
    return lambda name: run_array(workspace, run_id, name)


@st.cache_resource(show_spinner=False, max_entries=8)
def _score(workspace_path: str, run_id: int, digest: str, _session: ReviewSession, _decided: np.ndarray,
           _arrays: RunArrays) -> AuditQueue:
    return audit_session(_session, _decided, _arrays)


def snapshot(workspace: Workspace, session: ReviewSession, decided: np.ndarray, force: bool = False
             ) -> tuple[Optional[Snapshot], str]:
    """The queue snapshot for this run (computed when missing or stale by the rules above) and a note."""
    run_id, state = session.run_id, session.state
    arrays = cached_arrays(workspace, run_id)
    if not can_audit(session, arrays):
        return None, "This run has no saved image embeddings and text counterparts, which the audit needs."
    n = len(state.labels)
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
    with st.spinner(f"Scoring {n:,} images for the audit queue…"):
        queue = _score(str(workspace.path), run_id, digest, session, decided, arrays)
    snap = Snapshot(digest, clusters, session.edit_count, queue)
    store[key] = snap
    return snap, ""


def name_reasons(text: str, session: ReviewSession, rel_paths: pd.Series) -> str:
    """The audit's reasons with clusters named as they are called now and images by file name (``rel_paths``:
    by position; only the names a reason mentions are read)."""
    names = session.state.names

    def cluster(match: re.Match) -> str:
        c = int(match.group(1))
        return f"'{names[c]}'" if c in names else f"cluster {c} (merged away)"

    def image(match: re.Match) -> str:
        pos = int(match.group(1))
        return f"image {rel_paths.iat[pos]}" if 0 <= pos < len(rel_paths) else match.group(0)

    return _IMAGE_REF.sub(image, _CLUSTER_REF.sub(cluster, text))


# -- contact sheets --------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=4)
def _features(workspace_path: str, run_id: int, batches: tuple, _x: np.ndarray, _t: np.ndarray) -> np.ndarray:
    features = tac_features(_x, _t)
    features.setflags(write=False)
    return features


def session_features(workspace: Workspace, session: ReviewSession) -> Optional[np.ndarray]:
    """TAC's rows [x, t] of the session's images (the run's and any sorted-in batch's; shared, read-only), or
    None when some image has no saved embedding."""
    x, t = state_array(workspace, session, "image_embeddings"), state_array(workspace, session, "counterparts")
    n = len(session.state.labels)
    if x is None or t is None or len(x) != n or len(t) != n:
        return None
    return _features(str(workspace.path), session.run_id, batches_of(session), x, t)


def _centers(workspace: Workspace, run_id: int, features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Cluster centres for contact sheets and their version, recomputed only when the clusters changed noticeably.

    Recomputing costs ~0.15 s at 50k images; one decided image hardly moves a centre, so the centres are
    kept while the set of clusters is the same and at most 1 % of the labels differ from when they were made.
    """
    store: dict = st.session_state.setdefault("audit_centers", {})
    key = (str(workspace.path), int(run_id))
    old = store.get(key)
    if old is not None and len(old[0]) == len(labels):  # an intake (or its undo) changes the images: recompute
        old_labels, centers, version = old
        same_clusters = np.array_equal(np.unique(old_labels[old_labels >= 0]), np.unique(labels[labels >= 0]))
        if same_clusters and np.count_nonzero(old_labels != labels) <= 0.01 * len(labels):
            return centers, version
    centers = current_centers(features, labels)
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
    features = session_features(workspace, session)
    if features is None:
        return None
    labels = state.included_labels()
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
