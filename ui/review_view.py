"""The Review page, laid out for a 1,400 px wide screen: the toolbar (undo, redo, the outcome, the history),
then the map (with its colouring and filter by metadata) beside the cluster list with the open cluster's
actions, sign-off and sources, then the open cluster's gallery beside the selection with its actions and
gallery. Images added to the workspace after the run wait behind a button above them (:mod:`ui.review_intake`).

Each of those is a part (``st.fragment``, :mod:`ui.review_parts`) that reruns alone: an action reruns only
the parts its edit changed. Every edit goes through ``ui.review_actions`` (one event each). What is shown is
the run's result with the review log replayed (``ReviewSession``); the open cluster, the selection and the
gallery pages are view state in ``st.session_state``, not decisions. Keys: U undo, Y redo, N / P next and
previous cluster, V verify the open cluster, M move the selection, X exclude it.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from tac_core.errors import TacError
from tac_core.workspace.workspace import Workspace
from ui import access, review_intake, widgets
from ui import review_actions as actions
from ui import review_parts as parts
from ui.map_view import map_part
from ui.review_clusters import clusters_part, members_part
from ui.review_data import part_session, pick_run, review_session
from ui.review_selection import selected_part, selection_part
from ui.safe_text import esc
from ui.state import require_workspace, show_error, url_params

HISTORY_ROWS = 30


def render() -> None:
    st.title("Review")
    workspace = require_workspace()
    widgets.sidebar_status(workspace)
    running_runs(workspace)
    run_id = pick_run(workspace, key="review_run")
    if run_id is None:
        st.info("There is no finished run to review yet: cluster the images first.")
        return
    try:
        session = review_session(workspace, run_id)
    except TacError as exc:
        show_error(exc, f"open run {run_id} for review")
        return
    toolbar(workspace, run_id)
    done = review_intake.intake_bar(workspace, session)
    if done:
        actions.flash("success", done)
        st.rerun()  # the new images join every part of the page
    left, right = st.columns(2, gap="medium")
    with left:
        map_part(workspace, run_id)
    with right:
        clusters_part(workspace, run_id)
    members, selection = st.columns(2, gap="medium")
    with members:
        members_part(workspace, run_id)
    with selection:
        selection_part(workspace, run_id)
        selected_part(workspace, run_id)


def running_runs(workspace: Workspace) -> None:
    """A run being computed, by name, with a link to follow it on the Cluster page."""
    runs = workspace.runs()
    for run in runs[runs["status"].isin(("pending", "running"))].itertuples():
        word = "waiting to start" if run.status == "pending" else "running"
        st.info(f"Run {int(run.id)} is {word}. It can be reviewed here when it is done.")
        st.page_link("pages/cluster.py", label=f"Follow run {int(run.id)} on the Cluster page",
                     icon=":material/bubble_chart:", query_params={**url_params(), "run": str(int(run.id))})


def toolbar(workspace: Workspace, run_id: int, prefix: str = "review", parts_for=parts.parts_for) -> None:
    """Undo / Redo (also keys U and Y), what is in effect, the outcome of the last action and the history;
    a part of its own (``<prefix>_toolbar``) that every action reruns."""
    st.fragment(_toolbar, key=f"{prefix}_toolbar")(workspace, run_id, prefix, parts_for)


def _toolbar(workspace: Workspace, run_id: int, prefix: str, parts_for) -> None:
    session = part_session(workspace, run_id)
    locked, undo_why, redo_why = (session.refusal(action) for action in ("edit", "undo", "redo"))
    if locked:
        st.info(esc(f"Read only: {locked}"))
    cols = st.columns([1, 1, 1.4, 4.6], vertical_alignment="center")
    cols[0].button("Undo", key=f"{prefix}_undo", disabled=not session.can_undo or bool(undo_why), shortcut="U",
                   on_click=actions.undo, args=(workspace, run_id, parts_for), width="stretch",
                   help=access.help_text(undo_why))
    cols[1].button("Redo", key=f"{prefix}_redo", disabled=not session.can_redo or bool(redo_why), shortcut="Y",
                   on_click=actions.redo, args=(workspace, run_id, parts_for), width="stretch",
                   help=access.help_text(redo_why))
    entries = session.history()
    # drawn only while open: a table of the last events on every click would cost each action ~10-20 ms
    with cols[2].popover(f"History ({len(entries)})", width="stretch", key=f"{prefix}_history",
                         on_change="rerun") as events:
        if events.open:
            history(entries)
    cols[3].text(f"{session.edit_count} edit(s) in effect on run {run_id}.")
    message = actions.take_flash()
    if message:
        (st.success if message[0] == "success" else st.error)(esc(message[1]))


def history(entries: list[dict]) -> None:
    """The last events of the run's log, newest first, each with who made it (text only)."""
    if not entries:
        st.text("No edits yet.")
        return
    recent = entries[-HISTORY_ROWS:][::-1]
    latest = recent[0]
    st.text(f"Latest: #{latest['event_id']} by {latest['user']}, {latest['ts'][11:19]} UTC: {latest['text']}")
    st.dataframe(pd.DataFrame({"#": [e["event_id"] for e in recent],
                               "When (UTC)": [e["ts"][:19].replace("T", " ") for e in recent],
                               "User": [e["user"] for e in recent],
                               "Action": [e["text"] for e in recent],
                               "Undone": [e["undone"] for e in recent],
                               "Session": [e["session"] for e in recent]}), hide_index=True)
