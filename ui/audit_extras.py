"""The Audit page's other sections: re-cluster with my decisions, coverage per cluster, contact sheets."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from tac_core.errors import TacError
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import Workspace
from tac_core.workspace.recluster_run import recluster_into_new_run
from ui import access
from ui.audit_data import sheet_positions
from ui.gallery import strip
from ui.widgets import coverage_column
from ui.safe_text import esc, short
from ui.state import set_run, show_error

OUTCOMES = "recluster_outcomes"
SHEET_CLUSTER = "audit_sheet_cluster"
SHEET_SIZE = 6


# -- re-cluster ------------------------------------------------------------------------------------------
def _open_run(run_id: int, outcome_key) -> None:
    st.session_state.get(OUTCOMES, {}).pop(outcome_key, None)
    set_run(run_id)


def _dismiss(outcome_key) -> None:
    st.session_state.get(OUTCOMES, {}).pop(outcome_key, None)


def recluster_section(workspace: Workspace, session: ReviewSession) -> None:
    """Create a new run from the reviewer's decisions and show what changed; open it or stay."""
    st.subheader("Re-cluster with my decisions")
    st.text("Keeps every verified or moved image and every verified cluster as it is, re-assigns all other "
            "images, and saves the result as a new run. This run and its history stay as they are.")
    outcomes: dict = st.session_state.setdefault(OUTCOMES, {})
    key = (str(workspace.path), session.run_id)
    refused = access.why_not(workspace, "run")
    if st.button("Re-cluster with my decisions", key="audit_recluster", disabled=bool(refused),
                 help=access.help_text(refused)):
        try:
            with st.spinner("Re-clustering…"):
                outcomes[key] = recluster_into_new_run(session)
        except Exception as exc:  # noqa: BLE001 - a user's error in plain words, a bug as one line (show_error)
            show_error(exc, "re-cluster")
    outcome = outcomes.get(key)
    if outcome is None:
        return
    st.success(esc(f"Run {outcome.run_id} created from run {outcome.parent_run_id}: {outcome.moved} image(s) moved, "
                  f"{outcome.fixed} kept by your decisions."))
    if outcome.changes.empty:
        st.text("No image changed cluster.")
    else:
        st.dataframe(outcome.changes.rename(columns={"from": "From", "to": "To", "images": "Images",
                                                     "from_id": "From ID", "to_id": "To ID"}),
                     hide_index=True, key="audit_changes")
    if outcome.vanished:
        st.text("Emptied and removed: " + ", ".join(outcome.vanished))
    a, b = st.columns(2)
    a.button("Open the new run", key="audit_open_new_run", type="primary", on_click=_open_run,
             args=(outcome.run_id, key), width="stretch")
    b.button("Stay on this run", key="audit_keep_old_run", on_click=_dismiss, args=(key,), width="stretch")


# -- coverage --------------------------------------------------------------------------------------------
def coverage_section(session: ReviewSession, snap, decided: np.ndarray) -> None:
    """Per cluster: share verified (a meter), and how many of its images are still waiting in the queue."""
    clusters = session.clusters()
    waiting = (np.zeros(len(clusters), np.int64) if snap is None else
               snap.audit.waiting(decided, session.state.labels, clusters["cluster"].tolist()))
    st.subheader("Coverage per cluster")
    st.dataframe(pd.DataFrame({"ID": clusters["cluster"], "Name": clusters["name"], "Size": clusters["size"],
                               "Coverage": (clusters["verified_share"] * 100).round(), "Verified": clusters["verified"],
                               "Waiting in queue": waiting}),
                 hide_index=True, key="audit_coverage",
                 column_config={"Name": st.column_config.TextColumn("Name", width=220),
                                "Coverage": coverage_column()})


# -- contact sheet ---------------------------------------------------------------------------------------
def contact_sheet_section(workspace: Workspace, session: ReviewSession) -> None:
    """A cluster at a glance: its most typical members, those nearest its boundary, and the farthest."""
    state = session.state
    ids = sorted(state.names)
    st.subheader("Contact sheet")
    if st.session_state.get(SHEET_CLUSTER) not in ids:
        st.session_state[SHEET_CLUSTER] = ids[0]
    cluster = st.selectbox("Contact sheet of cluster", ids, key=SHEET_CLUSTER,
                           format_func=lambda c: short(f"{c} · {state.names.get(c, '?')}", 80))
    try:
        sheet = sheet_positions(workspace, session, cluster, SHEET_SIZE)
    except TacError as exc:
        show_error(exc, "build the contact sheet")
        return
    if sheet is None:
        st.text("This run has no saved embeddings, so no contact sheet.")
        return
    for title, key in (("Most typical", "typical"), ("Nearest the boundary", "boundary"),
                       ("Farthest from the centre", "farthest")):
        st.markdown(f"**{title}**")
        strip(workspace, session.images(sheet[key]), columns=SHEET_SIZE, caption_rows=True)
