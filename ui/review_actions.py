"""The Review page's actions, as button callbacks: each records ONE event through the ReviewSession.

Callbacks run before the page script, so the page that follows is drawn from the state after the edit, in
the same rerun (no second run). The event is committed to SQLite (durably) before the callback returns.
The outcome is kept as a one-shot message (``flash``) that the page shows at the top.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import streamlit as st

from tac_core.errors import TacError
from tac_core.workspace.review import Edit, ReviewSession
from tac_core.workspace.auto_split import split_cluster, split_off
from tac_core.workspace.workspace import Workspace
from ui.map_view import selected_ids, set_selection
from ui.review_batches import state_array
from ui.review_data import cached_session
from ui.review_intake import new_cluster_from_unsorted

LOG = logging.getLogger("tac_studio")
FLASH = "review_flash"
CLUSTER = "review_cluster"
NEW_NAME = "review_new_name"
SUGGESTION = "review_suggestion"
MERGE_SOURCES = "review_merge_sources"
MOVE_TARGET = "review_move_target"


def flash(kind: str, text: str) -> None:
    st.session_state[FLASH] = (kind, text)


def take_flash():
    return st.session_state.pop(FLASH, None)


def act(workspace: Workspace, run_id: int, doing: str, action: Callable[[ReviewSession], Edit | None]) -> None:
    """Run one action on this browser session's ReviewSession; remember what happened for the page."""
    session = cached_session(workspace, run_id)
    if session is None:
        flash("error", "The run is not open any more; choose it again.")
        return
    try:
        edit = action(session)
    except TacError as exc:
        flash("error", f"Could not {doing}: {exc}")
    except Exception as exc:  # an engine bug: say so plainly, keep the traceback in the server log
        LOG.exception("unexpected failure while trying to %s", doing)
        flash("error", f"Could not {doing} because of an unexpected problem ({type(exc).__name__}). Your work so "
                       "far is saved; the details are in the server log.")
    else:
        if edit is not None:
            flash("success", edit.text[:1].upper() + edit.text[1:] + ".")


# -- cluster actions -------------------------------------------------------------------------------------
def rename(workspace: Workspace, run_id: int, cluster: int) -> None:
    def run(session: ReviewSession) -> Edit:
        edit = session.rename(cluster, st.session_state.get(NEW_NAME, ""))
        st.session_state[NEW_NAME] = ""
        return edit
    act(workspace, run_id, "rename the cluster", run)


def use_suggestion() -> None:
    if st.session_state.get(SUGGESTION):
        st.session_state[NEW_NAME] = st.session_state[SUGGESTION]
    st.session_state[SUGGESTION] = None


def merge(workspace: Workspace, run_id: int, cluster: int) -> None:
    def run(session: ReviewSession) -> Edit:
        edit = session.merge(list(st.session_state.get(MERGE_SOURCES) or []), cluster)
        st.session_state[MERGE_SOURCES] = []
        return edit
    act(workspace, run_id, "merge the clusters", run)


def verify_cluster(workspace: Workspace, run_id: int, cluster: int, value: bool) -> None:
    act(workspace, run_id, "change the cluster's verified mark", lambda s: s.verify_cluster(cluster, value))


def _show_new(edit: Edit) -> Edit:
    st.session_state[CLUSTER] = edit.cluster  # open the new cluster, ready to be named
    return edit


def auto_split(workspace: Workspace, run_id: int, cluster: int) -> None:
    def run(session: ReviewSession) -> Edit:
        return _show_new(split_cluster(session, cluster, state_array(workspace, session, "image_embeddings"),
                                       state_array(workspace, session, "counterparts")))
    act(workspace, run_id, "split the cluster", run)


def cluster_unsorted(workspace: Workspace, run_id: int) -> None:
    """The selected unsorted images become a cluster named from their own anchors."""
    act(workspace, run_id, "make a cluster of the unsorted images",
        lambda session: _show_new(new_cluster_from_unsorted(
            session, selected_ids(run_id), lambda name: state_array(workspace, session, name))))


def split_selection(workspace: Workspace, run_id: int, cluster: int) -> None:
    act(workspace, run_id, "split the selection off",
        lambda session: _show_new(split_off(session, cluster, selected_ids(run_id))))


# -- selection actions -----------------------------------------------------------------------------------
def _selection(session: ReviewSession) -> np.ndarray:
    ids = selected_ids(session.run_id)
    return ids[np.isin(ids, session.state.image_ids)]


def move_selection(workspace: Workspace, run_id: int) -> None:
    act(workspace, run_id, "move the images",
        lambda s: s.move(_selection(s), st.session_state.get(MOVE_TARGET)))


def verify_selection(workspace: Workspace, run_id: int, value: bool = True) -> None:
    act(workspace, run_id, "change the images' verified mark", lambda s: s.verify_images(_selection(s), value))


def exclude_selection(workspace: Workspace, run_id: int, value: bool = True) -> None:
    act(workspace, run_id, "exclude the images" if value else "include the images",
        lambda s: s.exclude(_selection(s), value))


def select(run_id: int, image_ids) -> None:
    set_selection(run_id, np.union1d(selected_ids(run_id), np.asarray(image_ids, np.int64)))


def clear_selection(run_id: int) -> None:
    set_selection(run_id, [])


# -- undo and redo ---------------------------------------------------------------------------------------
def undo(workspace: Workspace, run_id: int) -> None:
    act(workspace, run_id, "undo", lambda s: s.undo())


def redo(workspace: Workspace, run_id: int) -> None:
    act(workspace, run_id, "redo", lambda s: s.redo())
