"""The Review page's actions, as button callbacks: each records ONE event through the ReviewSession and then
reruns only the parts of the page that the edit changed (:mod:`ui.review_parts`).

Callbacks run before the parts are drawn, so they show the state after the edit, in the same rerun. The event
is committed to SQLite (durably) before the callback returns. The outcome is kept as a one-shot message
(``flash``) that the toolbar shows.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np
import streamlit as st

from tac_core.cluster.map_sample import DRAW_BUDGET
from tac_core.errors import TacError
from tac_core.workspace.review import Edit, ReviewSession
from tac_core.workspace.review_selection import bulk_selectable
from tac_core.workspace.workspace import Workspace
from ui import review_parts as parts
from ui.review_batches import state_array
from ui.review_data import cached_session
from ui.review_intake import new_cluster_from_unsorted

LOG = logging.getLogger("tac_studio")
FLASH = "review_flash"
CLUSTER = parts.CLUSTER
NEW_NAME = "review_new_name"
SUGGESTION = "review_suggestion"
MERGE_SOURCES = "review_merge_sources"
MOVE_TARGET = "review_move_target"


def flash(kind: str, text: str) -> None:
    st.session_state[FLASH] = (kind, text)


def take_flash():
    return st.session_state.pop(FLASH, None)


def act(workspace: Workspace, run_id: int, doing: str, action: Callable[[ReviewSession], Edit | None]
        ) -> Optional[Edit]:
    """Run one action on this browser session's ReviewSession; remember what happened for the toolbar.
    Returns the edit, or None when nothing was recorded (the message says why)."""
    session = cached_session(workspace, run_id)
    if session is None:
        flash("error", "The run is not open any more; choose it again.")
        return None
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
        return edit
    return None


PartsFor = Callable[[frozenset], list]  # what changed -> the page's parts to rerun, its toolbar first


def edit_and_redraw(workspace: Workspace, run_id: int, doing: str, action: Callable[[ReviewSession], Edit | None],
                    parts_for: PartsFor = parts.parts_for) -> None:
    """:func:`act`, then rerun the parts the edit changed (only the toolbar, with the message, when it failed;
    the whole page when the session caught up with other sessions' edits on the way)."""
    session = cached_session(workspace, run_id)
    seen = session.event_count if session is not None else 0
    edit = act(workspace, run_id, doing, action)
    if session is not None and session.event_count > seen + (edit is not None):
        st.rerun()
    parts.redraw(*parts_for(edit.changes if edit is not None else frozenset()))


# -- cluster actions -------------------------------------------------------------------------------------
def rename(workspace: Workspace, run_id: int, cluster: int) -> None:
    def run(session: ReviewSession) -> Edit:
        edit = session.rename(cluster, st.session_state.get(NEW_NAME, ""))
        st.session_state[NEW_NAME] = ""
        return edit
    edit_and_redraw(workspace, run_id, "rename the cluster", run)


def use_suggestion() -> None:
    if st.session_state.get(SUGGESTION):
        st.session_state[NEW_NAME] = st.session_state[SUGGESTION]
    st.session_state[SUGGESTION] = None


def merge(workspace: Workspace, run_id: int, cluster: int) -> None:
    def run(session: ReviewSession) -> Edit:
        edit = session.merge(list(st.session_state.get(MERGE_SOURCES) or []), cluster)
        st.session_state[MERGE_SOURCES] = []
        return edit
    edit_and_redraw(workspace, run_id, "merge the clusters", run)


def verify_cluster(workspace: Workspace, run_id: int, cluster: int, value: bool) -> None:
    edit_and_redraw(workspace, run_id, "change the cluster's verified mark", lambda s: s.verify_cluster(cluster, value))


def _show_new(edit: Edit) -> Edit:
    st.session_state[CLUSTER] = edit.cluster  # open the new cluster, ready to be named
    return edit


def auto_split(workspace: Workspace, run_id: int, cluster: int) -> None:
    from tac_core.workspace.auto_split import split_cluster  # k-means: torch loads on the first split, not with the page

    def run(session: ReviewSession) -> Edit:
        return _show_new(split_cluster(session, cluster, state_array(workspace, session, "image_embeddings"),
                                       state_array(workspace, session, "counterparts")))
    edit_and_redraw(workspace, run_id, "split the cluster", run)


def cluster_unsorted(workspace: Workspace, run_id: int) -> None:
    """The selected unsorted images become a cluster named from their own anchors."""
    edit_and_redraw(workspace, run_id, "make a cluster of the unsorted images",
                    lambda session: _show_new(new_cluster_from_unsorted(
                        session, parts.selected_ids(run_id), lambda name: state_array(workspace, session, name))))


def split_selection(workspace: Workspace, run_id: int, cluster: int) -> None:
    from tac_core.workspace.auto_split import split_off

    edit_and_redraw(workspace, run_id, "split the selection off",
                    lambda session: _show_new(split_off(session, cluster, parts.selected_ids(run_id))))


def opened(workspace: Workspace, run_id: int) -> None:
    """After the open cluster changed (select box, list row, next/previous): redraw what shows it; the map too
    when it draws a sample, which holds every point of the open cluster."""
    session = cached_session(workspace, run_id)
    sampled = session is not None and len(session.state.labels) > DRAW_BUDGET
    parts.redraw(parts.CLUSTERS, parts.MEMBERS, *((parts.MAP,) if sampled else ()))


def step_cluster(workspace: Workspace, run_id: int, ids: list[int], step: int) -> None:
    """Open the next (``step`` 1) or previous (−1) cluster of ``ids``, wrapping around."""
    current = st.session_state.get(CLUSTER)
    index = ids.index(current) if current in ids else -step
    st.session_state[CLUSTER] = ids[(index + step) % len(ids)]
    opened(workspace, run_id)


# -- selection actions -----------------------------------------------------------------------------------
def _selection(session: ReviewSession) -> np.ndarray:
    ids = parts.selected_ids(session.run_id)
    return ids[np.isin(ids, session.state.image_ids)]


def move_selection(workspace: Workspace, run_id: int) -> None:
    edit_and_redraw(workspace, run_id, "move the images",
                    lambda s: s.move(_selection(s), st.session_state.get(MOVE_TARGET)))


def verify_selection(workspace: Workspace, run_id: int, value: bool = True) -> None:
    edit_and_redraw(workspace, run_id, "change the images' verified mark",
                    lambda s: s.verify_images(_selection(s), value))


def exclude_selection(workspace: Workspace, run_id: int, value: bool = True) -> None:
    edit_and_redraw(workspace, run_id, "exclude the images" if value else "include the images",
                    lambda s: s.exclude(_selection(s), value))


def select_positions(workspace: Workspace, run_id: int, positions) -> None:
    """Add the images at ``positions`` to the selection, leaving out excluded ones (a bulk selection)."""
    session = cached_session(workspace, run_id)
    if session is not None:
        added = bulk_selectable(session.state, positions)
        parts.set_selection(run_id, np.union1d(parts.selected_ids(run_id), added))
    parts.redraw(*parts.SELECTION_PARTS)


def clear_selection(run_id: int) -> None:
    parts.set_selection(run_id, [])
    parts.redraw(*parts.SELECTION_PARTS)


# -- undo and redo ---------------------------------------------------------------------------------------
def undo(workspace: Workspace, run_id: int, parts_for: PartsFor = parts.parts_for) -> None:
    edit_and_redraw(workspace, run_id, "undo", lambda s: s.undo(), parts_for)


def redo(workspace: Workspace, run_id: int, parts_for: PartsFor = parts.parts_for) -> None:
    edit_and_redraw(workspace, run_id, "redo", lambda s: s.redo(), parts_for)
