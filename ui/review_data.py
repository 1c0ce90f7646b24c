"""What the Review and Audit pages share: the open ReviewSession, the run picker, cached run arrays and layout.

Decisions live in the workspace (the review log); this module holds only handles and caches:
- one :class:`~tac_core.workspace.review.ReviewSession` per browser session and run, in ``st.session_state``, refreshed
  on every rerun so edits made in another browser session appear;
- run arrays (embeddings, counterparts, the 2-D layout) loaded once per server process and run
  (``st.cache_resource``: no copy per rerun — at 50k images they are hundreds of MB);
- a digest of the review state, the cache key of everything derived from labels and flags.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Optional

import numpy as np
import pandas as pd
import streamlit as st

from tac_core.inputs.thumbnails import thumbnail_path
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.run_layout import (LAYOUT_ARRAY, compute_layout, layout_features, placeholder_layout,
                                            preview_layout, saved_layout_name)
from tac_core.workspace.workspace import Workspace
from ui import identity
from ui.safe_text import short
from ui.state import current_run_id, set_run

LOG = logging.getLogger("tac_studio")
BROWSER_FRIENDLY = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
MAX_ORIGINAL_BYTES = 5_000_000


# -- the review session ----------------------------------------------------------------------------------
def browser_session_id() -> str:
    """A random id for this browser session, stored with each event it writes."""
    return identity.session_id()


def review_session(workspace: Workspace, run_id: int) -> ReviewSession:
    """This browser session's ReviewSession of the run, caught up with every session's edits."""
    sessions: dict = st.session_state.setdefault("review_sessions", {})
    key = (str(workspace.path), int(run_id))
    session = sessions.get(key)
    if session is None or session.workspace is not workspace:
        session = sessions[key] = ReviewSession(workspace, int(run_id), session_id=browser_session_id())
    else:
        session.refresh()
    return session


def part_session(workspace: Workspace, run_id: int) -> ReviewSession:
    """The session for one part of a page (an ``st.fragment``): when catching up shows that another browser
    session edited the run, the whole page reruns, since the edit may change what other parts show."""
    session = cached_session(workspace, run_id)
    if session is None or session.workspace is not workspace:
        return review_session(workspace, run_id)
    if session.refresh():
        st.rerun()
    return session


def cached_session(workspace: Workspace, run_id: int) -> Optional[ReviewSession]:
    """The session a previous rerun opened (for button callbacks, which run before the page script)."""
    return st.session_state.get("review_sessions", {}).get((str(workspace.path), int(run_id)))


# -- picking the run -------------------------------------------------------------------------------------
def pick_run(workspace: Workspace, key: str) -> Optional[int]:
    """A "Run" selector over finished runs (newest first); choosing one makes it the open run everywhere."""
    runs = workspace.runs()
    runs = runs[runs["status"] == "done"]
    if runs.empty:
        return None
    current = current_run_id(workspace)
    ids = [int(i) for i in runs["id"]]
    labels = {int(row.id): _run_label(row) for row in runs.itertuples()}
    if st.session_state.get(key) not in ids or st.session_state.get(key) != current:
        st.session_state[key] = current if current in ids else ids[0]
    chosen = st.selectbox("Run", ids, key=key, format_func=lambda i: labels[i],
                          on_change=lambda: set_run(st.session_state[key]))
    if chosen != current:
        set_run(chosen)
    return int(chosen)


def _run_label(row) -> str:
    params = row.params if isinstance(row.params, dict) else {}
    clusters = 0 if pd.isna(row.n_clusters) else int(row.n_clusters)
    parts = [f"Run {row.id}", f"{clusters} clusters", f"{row.n_images:,} images"]
    if params.get("mode"):
        parts.append(str(params["mode"]))
    if not pd.isna(row.parent_run_id):
        parts.append(f"re-clustered from run {int(row.parent_run_id)}")
    parts.append(str(row.created)[:16].replace("T", " "))
    return short(" · ".join(parts), 120)


# -- run arrays ------------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=16)
def _run_array(workspace_path: str, run_id: int, name: str, stamp: int, _workspace: Workspace) -> Optional[np.ndarray]:
    array = _workspace.load_run_array(run_id, name)
    if array is not None:
        array.setflags(write=False)  # shared by every session: nobody may change it in place
    return array


def run_array(workspace: Workspace, run_id: int, name: str) -> Optional[np.ndarray]:
    """A saved run array (read-only, shared), or None when the run has none by that name.

    Cached per file version (its modification time), so an array saved later — the map computed in the
    background — is picked up on the next rerun.
    """
    try:
        stamp = (workspace.run_dir(run_id) / f"{name}.npy").stat().st_mtime_ns
    except OSError:
        stamp = 0
    return _run_array(str(workspace.path), int(run_id), name, stamp, workspace)


@st.cache_resource(show_spinner=False, max_entries=8)
def _assignments(workspace_path: str, run_id: int, _workspace: Workspace) -> pd.DataFrame:
    return _workspace.run_assignments(run_id)


def run_paths(workspace: Workspace, run_id: int) -> pd.DataFrame:
    """path, rel_path and sha256 of the run's images by position (shared: do not modify)."""
    return _assignments(str(workspace.path), int(run_id), workspace)[["path", "rel_path", "sha256"]]


def layout(workspace: Workspace, run_id: int) -> tuple[np.ndarray, str]:
    """The run's 2-D layout (N × 2) and a note on where it came from (:mod:`tac_core.workspace.run_layout`).

    A run without a saved map (an old run) gets it computed once per server process, in a background thread;
    meanwhile the page shows a PCA picture of the same features.
    """
    run = workspace.run(run_id)
    n = int(run["n_images"])
    xy = run_array(workspace, run_id, LAYOUT_ARRAY)
    if xy is not None and xy.shape == (n, 2):
        return xy, f"{saved_layout_name(run['params'])} of the images' image and text features"
    features = layout_features(run_array(workspace, run_id, "image_embeddings"),
                               run_array(workspace, run_id, "counterparts"), n)
    if features is None:
        return placeholder_layout(run_id, n), "random positions (the run has no embeddings)"
    started = _background_umap(str(workspace.path), int(run_id), workspace, features)
    note = "PCA picture while the UMAP map is computed; refresh in a minute" if started else "PCA picture"
    return _quick_layout(str(workspace.path), int(run_id), features), note


@st.cache_resource(show_spinner=False, max_entries=4)
def _quick_layout(workspace_path: str, run_id: int, _features: np.ndarray) -> np.ndarray:
    xy = preview_layout(_features)
    xy.setflags(write=False)
    return xy


@st.cache_resource(show_spinner=False, max_entries=64)
def _background_umap(workspace_path: str, run_id: int, _workspace: Workspace, _features: np.ndarray) -> bool:
    """Start computing the run's UMAP map once per server process; it is saved when done."""
    def work() -> None:
        try:
            compute_layout(_workspace, run_id, _features)
        except Exception:  # noqa: BLE001 - the PCA picture stays; say why in the server log
            LOG.exception("could not compute the UMAP map of run %s in %s", run_id, workspace_path)

    threading.Thread(target=work, name=f"umap-run-{run_id}", daemon=True).start()
    return True


@st.cache_resource(show_spinner=False, max_entries=8)
def _cluster_frame(workspace_path: str, run_id: int, version: int, _session: ReviewSession) -> pd.DataFrame:
    return _session.clusters()


def cluster_frame(session: ReviewSession) -> pd.DataFrame:
    """``session.clusters()`` computed once per state (keyed by the last event that changed it, the same in every
    browser session) and shared: do not modify."""
    return _cluster_frame(str(session.workspace.path), session.run_id, session.changed_at(), session)


# -- state digests and thumbnails ------------------------------------------------------------------------
def state_digest(session: ReviewSession, *extra: np.ndarray) -> str:
    """A short hash of labels, excluded and verified flags (plus ``extra`` arrays): a cache key of derived data."""
    state = session.state
    h = hashlib.blake2b(digest_size=12)
    for array in (state.labels, state.excluded, state.counts_as_verified(), *extra):
        h.update(np.ascontiguousarray(array).tobytes())
    h.update(repr(sorted(state.names)).encode())
    return h.hexdigest()


def image_source(workspace: Workspace, sha256: str, path: str) -> Optional[str]:
    """What to show for an image: its thumbnail, else a small browser-readable original, else None."""
    thumb = thumbnail_path(workspace.thumbs_dir, sha256)
    if thumb.is_file():
        return str(thumb)
    try:
        if path.lower().endswith(BROWSER_FRIENDLY) and 0 < os.path.getsize(path) <= MAX_ORIGINAL_BYTES:
            return path
    except OSError:
        pass
    return None

