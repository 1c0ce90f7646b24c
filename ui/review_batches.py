"""The arrays of a review state for the Review and Audit pages: the run's own, followed by those of the images
intakes added (:func:`tac_core.workspace.intake.review_arrays`), put together once per server process and
list of batches in effect (an intake or its undo changes the list; other edits do not)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
import streamlit as st

from tac_core.workspace.review import ReviewSession
from tac_core.workspace.run_layout import LAYOUT_ARRAY
from tac_core.workspace.workspace import Workspace
from ui.review_data import layout, run_array, run_paths


def batches_of(session: ReviewSession) -> tuple:
    return tuple(batch for batch, _, _ in session.state.batches)


@st.cache_resource(show_spinner=False, max_entries=16)
def _extended(workspace_path: str, run_id: int, name: str, batches: tuple, _workspace: Workspace,
              _session: ReviewSession) -> Optional[np.ndarray]:
    from tac_core.workspace.intake import review_arrays  # torch: only once a review holds new images

    array = review_arrays(_session.state, lambda key: run_array(_workspace, run_id, key))(name)
    if array is not None:
        array.setflags(write=False)
    return array


def state_array(workspace: Workspace, session: ReviewSession, name: str) -> Optional[np.ndarray]:
    """A per-image array of the session's images (shared, read only), or None when a part of it is missing."""
    if not session.state.batches:
        return run_array(workspace, session.run_id, name)
    return _extended(str(workspace.path), session.run_id, name, batches_of(session), workspace, session)


def state_layout(workspace: Workspace, session: ReviewSession) -> tuple[np.ndarray, str]:
    """The map's positions of the session's images and where they come from: the run's layout, then the new
    images where their intake placed them (next to their cluster's centre when the run has no saved map)."""
    xy, source = layout(workspace, session.run_id)
    state = session.state
    if not state.batches:
        return xy, source
    placed = state_array(workspace, session, LAYOUT_ARRAY)
    if placed is not None and len(placed) == len(state.labels) and len(xy) == state.n_run:
        return np.concatenate([xy, placed[state.n_run:]]), source + "; new images placed on it"
    return _beside_clusters(str(workspace.path), session.run_id, batches_of(session), xy, session), (
        source + "; new images beside their cluster (the run has no saved map to place them on)")


@st.cache_resource(show_spinner=False, max_entries=4)
def _beside_clusters(workspace_path: str, run_id: int, batches: tuple, _xy: np.ndarray,
                     _session: ReviewSession) -> np.ndarray:
    state = _session.state
    run_labels = state.labels[:state.n_run]
    extra = np.zeros((len(state.labels) - state.n_run, 2), np.float32)
    rng = np.random.default_rng(run_id)
    for i, cluster in enumerate(state.labels[state.n_run:].tolist()):
        members = _xy[run_labels == cluster]
        centre = members.mean(axis=0) if len(members) else _xy.mean(axis=0)
        extra[i] = centre + 0.02 * np.ptp(_xy, axis=0) * rng.standard_normal(2)
    out = np.concatenate([_xy, extra])
    out.setflags(write=False)
    return out


@st.cache_resource(show_spinner=False, max_entries=8)
def _paths(workspace_path: str, run_id: int, batches: tuple, _workspace: Workspace,
           _session: ReviewSession) -> pd.DataFrame:
    own = run_paths(_workspace, run_id)
    images = _workspace.images().set_index("id")
    extra = images.loc[_session.state.image_ids[len(own):], ["path", "rel_path", "sha256"]].reset_index(drop=True)
    return pd.concat([own, extra], ignore_index=True)


def state_paths(workspace: Workspace, session: ReviewSession) -> pd.DataFrame:
    """path, rel_path and sha256 of the session's images by position (shared: do not modify)."""
    if not session.state.batches:
        return run_paths(workspace, session.run_id)
    return _paths(str(workspace.path), session.run_id, batches_of(session), workspace, session)
