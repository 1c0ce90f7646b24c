"""The History page: who approved each cluster and when (with the two-person rule), and every event of a run's
review, filterable by user, cluster and action and downloadable as CSV (formula-safe).

The table is :func:`tac_core.workspace.review_log.events_table`, what ``python -m tac_core workspace history``
prints; the download is :func:`tac_core.workspace.export.history_csv` of the rows shown.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from tac_core.errors import TacError
from tac_core.workspace.export import history_csv
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.review_log import events_table
from ui import sign_off_view, widgets
from ui.review_data import pick_run, review_session
from ui.safe_text import short
from ui.state import require_workspace, show_error

USERS, CLUSTERS, ACTIONS = "history_users", "history_clusters", "history_actions"


def render() -> None:
    st.title("History")
    workspace = require_workspace()
    widgets.sidebar_status(workspace)
    widgets.show_flashes()
    run_id = pick_run(workspace, key="history_run")
    if run_id is None:
        st.info("There is no finished run yet: its review history starts when one is reviewed.")
        return
    try:
        session = review_session(workspace, run_id)
    except TacError as exc:
        show_error(exc, f"open the history of run {run_id}")
        return
    sign_off_view.approvals_section(workspace, session)
    st.divider()
    events_section(session)
    st.divider()
    widgets.page_link("pages/review.py")


def events_section(session: ReviewSession) -> None:
    """The run's events, newest first, filtered as chosen; the CSV holds the rows shown, oldest first."""
    st.subheader("Events")
    everything = session.history()
    if not everything:
        st.info("Nothing has been decided on this run yet.")
        return
    users = sorted({entry["user"] for entry in everything}, key=str.casefold)
    clusters = sorted({c for entry in everything for c in entry["clusters"]})
    kinds = sorted({entry["kind"] for entry in everything})
    for key, options in ((USERS, users), (CLUSTERS, clusters), (ACTIONS, kinds)):  # e.g. after a run switch
        st.session_state[key] = [v for v in st.session_state.get(key, []) if v in options]
    cols = st.columns(3)
    chosen_users = cols[0].multiselect("User", users, key=USERS, placeholder="Everyone")
    chosen_clusters = cols[1].multiselect("Cluster", clusters, key=CLUSTERS, placeholder="Every cluster",
                                          format_func=lambda c: _cluster_label(session, c))
    chosen_kinds = cols[2].multiselect("Action", kinds, key=ACTIONS, placeholder="Every action")
    table = events_table(session, chosen_users, chosen_clusters, chosen_kinds)
    st.caption(f"{len(table)} of {len(everything)} events. An undone event stays listed (Undone) next to the undo "
               "that reverted it; times are UTC.")
    shown = table.iloc[::-1]
    st.dataframe(pd.DataFrame({
        "#": shown["event_id"], "Time": shown["time"].str[:19].str.replace("T", " "), "User": shown["user"],
        "Action": shown["action"], "Clusters": shown["clusters"], "Images": shown["images"],
        "Undone": shown["undone"], "What happened": shown["description"]}),
        hide_index=True, width="stretch", key="history_events",
        column_config={"What happened": st.column_config.TextColumn("What happened", width="large"),
                       "Undone": st.column_config.CheckboxColumn("Undone")})
    st.download_button("Download history CSV", history_csv(table), file_name=f"history_run{session.run_id}.csv",
                       mime="text/csv", on_click="ignore", disabled=table.empty)


def _cluster_label(session: ReviewSession, cluster: int) -> str:
    name = session.state.names.get(cluster)
    return short(f"{cluster} · {name}" if name is not None else f"{cluster} (merged away)", 80)
