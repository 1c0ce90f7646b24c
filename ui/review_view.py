"""The Review page: map, cluster list, one cluster in detail with its gallery, the selection, and history.

Every edit goes through ``ui.review_actions`` (one event each, applied before the page is drawn). What is
shown is the run's result with the review log replayed (``ReviewSession``); the current cluster, the
selection and the gallery page are view state in ``st.session_state``, not decisions.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
import streamlit as st

from tac_core.errors import TacError
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import Workspace
from ui import review_actions as actions
from ui import access, cluster_sizes, map_view, review_intake, review_metadata, sign_off_view, widgets
from ui.review_batches import state_layout
from ui.gallery import grid, page_of
from ui.review_data import pick_run, review_session
from ui.safe_text import esc, short
from ui.state import require_workspace, show_error

TABLE = "review_cluster_table"
LEAST_FIRST = "review_least_first"
CLUSTER_PAGE = "review_page"
SELECTION_PAGE = "review_selection_page"
HISTORY_ROWS = 30


def render() -> None:
    st.title("Review")
    workspace = require_workspace()
    widgets.sidebar_status(workspace)
    run_id = pick_run(workspace, key="review_run")
    if run_id is None:
        st.info("There is no finished run to review yet: cluster the images first.")
        return
    try:
        session = review_session(workspace, run_id)
    except TacError as exc:
        show_error(exc, f"open run {run_id} for review")
        return
    toolbar(workspace, session)
    done = review_intake.intake_bar(workspace, session)
    if done:
        actions.flash("success", done)
        st.rerun()  # the new images join every part of the page
    clusters = session.clusters()
    current = current_cluster(session, clusters)
    left, right = st.columns([3, 2], gap="medium")
    with left:
        view = review_metadata.map_controls(workspace, session)
        review_map(workspace, session, view)
    with right:
        cluster_table(clusters, current)
        review_metadata.findings(workspace, session)
        selection_actions(workspace, session, clusters, current)
    cluster_sizes.render(workspace, session, clusters)
    st.divider()
    cluster_panel(workspace, session, clusters, current, view.visible)
    selection_gallery(workspace, session)
    history(session)


def review_map(workspace: Workspace, session: ReviewSession, view: review_metadata.MapView) -> None:
    """The map of the review's images (those intakes added placed on it), coloured and filtered as chosen."""
    try:
        xy, source = state_layout(workspace, session)
    except TacError as exc:
        show_error(exc, "load the map of this run")
        return
    colour_by = None
    if view.colour is not None:
        codes, names = review_metadata.colour_groups(review_metadata.review_metadata(workspace, session), view.colour)
        colour_by = (view.colour, codes, names)
    map_view.render(xy, session, source, view.visible, colour_by)


def toolbar(workspace: Workspace, session: ReviewSession, prefix: str = "review") -> None:
    """Undo / Redo (also keys U and Y; only your own edit unless you are an approver or admin, the button says
    why), what is in effect, and the outcome of the last action; for a user who may not edit, why not."""
    run_id = session.run_id
    locked, undo_why, redo_why = (session.refusal(action) for action in ("edit", "undo", "redo"))
    if locked:
        st.info(esc(f"Read only: {locked}"))
    cols = st.columns([1, 1, 6], vertical_alignment="center")
    cols[0].button("Undo", key=f"{prefix}_undo", disabled=not session.can_undo or bool(undo_why), shortcut="U",
                   on_click=actions.undo, args=(workspace, run_id), width="stretch", help=access.help_text(undo_why))
    cols[1].button("Redo", key=f"{prefix}_redo", disabled=not session.can_redo or bool(redo_why), shortcut="Y",
                   on_click=actions.redo, args=(workspace, run_id), width="stretch", help=access.help_text(redo_why))
    cols[2].text(f"{session.edit_count} edit(s) in effect on run {run_id}.")
    message = actions.take_flash()
    if message:
        (st.success if message[0] == "success" else st.error)(esc(message[1]))


def _option(clusters: pd.DataFrame):
    names = dict(zip(clusters["cluster"], clusters["name"]))
    sizes = dict(zip(clusters["cluster"], clusters["size"]))
    return lambda c: short(f"{c} · {names.get(c, '?')} ({sizes.get(c, 0)})", 80)


def current_cluster(session: ReviewSession, clusters: pd.DataFrame) -> int:
    """The cluster shown in detail (view state); falls back to the largest when it was merged away."""
    ids = clusters["cluster"].tolist()
    if st.session_state.get(actions.CLUSTER) not in ids:
        st.session_state[actions.CLUSTER] = int(clusters.sort_values("size", ascending=False)["cluster"].iloc[0])
    current = int(st.session_state[actions.CLUSTER])
    # set again on every run: the select box shows "id · name (size)", and a browser keeps the label it was last
    # sent, so after a rename or a merge it would send back a label that no longer matches any option
    st.session_state[actions.CLUSTER] = current
    if st.session_state.get("review_inputs_for") != (session.run_id, current):
        st.session_state["review_inputs_for"] = (session.run_id, current)  # another cluster: clear its inputs
        st.session_state[actions.NEW_NAME] = ""
        st.session_state[actions.MERGE_SOURCES] = []
    else:  # a cluster merged away by another session must not linger in the merge choice
        st.session_state[actions.MERGE_SOURCES] = [c for c in st.session_state.get(actions.MERGE_SOURCES, [])
                                                   if c in ids and c != current]
    return current


def _on_table_select() -> None:
    state = st.session_state.get(TABLE)
    rows = state["selection"]["rows"] if state else []
    order = st.session_state.get("review_table_order", [])
    if rows and rows[0] < len(order):
        st.session_state[actions.CLUSTER] = order[rows[0]]


def cluster_table(clusters: pd.DataFrame, current: int) -> None:
    """Every cluster: size, name, verified, coverage, confidence, anchors. Click a row to open it."""
    table = pd.DataFrame({
        "ID": clusters["cluster"], "Name": clusters["name"], "Size": clusters["size"],
        "Coverage": clusters["verified_share"], "Verified": clusters["verified"],
        "Anchors": [", ".join(f"{term} {score:.2f}" for term, score in pairs) for pairs in clusters["top_anchors"]],
        "Confidence": clusters["mean_confidence"], "Excluded": clusters["excluded"],
        "Approved": sign_off_view.approved_column(clusters)})
    st.session_state["review_table_order"] = table["ID"].tolist()
    st.subheader("Clusters")
    st.dataframe(table, key=TABLE, on_select=_on_table_select, selection_mode="single-row", hide_index=True,
                 height=min(320, 38 + 35 * len(table)),
                 column_config={"Name": st.column_config.TextColumn("Name", width=150),
                                "Anchors": st.column_config.TextColumn("Anchors", width=220),
                                "Coverage": st.column_config.ProgressColumn("Coverage", format="percent",
                                                                            min_value=0.0, max_value=1.0,
                                                                            help="Share of images verified"),
                                "Confidence": st.column_config.NumberColumn(format="%.2f"),
                                "Verified": st.column_config.CheckboxColumn("Verified")})


def cluster_panel(workspace: Workspace, session: ReviewSession, clusters: pd.DataFrame, current: int,
                  visible: Optional[np.ndarray] = None) -> None:
    run_id = session.run_id
    row = clusters.set_index("cluster").loc[current]
    st.subheader("Cluster")
    st.selectbox("Cluster", clusters["cluster"].tolist(), key=actions.CLUSTER, format_func=_option(clusters))
    info, edit = st.columns([2, 3], gap="medium")
    with info:
        st.text(f"Name: {row['name']}")
        st.text(f"{int(row['size'])} images · {int(row['excluded'])} excluded · coverage "
                f"{row['verified_share']:.0%} · mean confidence {row['mean_confidence']:.2f}")
        st.text("Verified cluster" if row["verified"] else "Not verified")
        anchors = session.anchors(current)
        if anchors:
            st.dataframe(pd.DataFrame(anchors[:10], columns=["Anchor", "Score"]), hide_index=True,
                         column_config={"Score": st.column_config.NumberColumn(format="%.3f")})
        else:
            st.text("No text anchors (a split-off cluster gets them at the next clustering).")
        review_metadata.cluster_sources(workspace, session, current)
    locked = bool(session.refusal("edit"))
    with edit:
        suggestions = session.suggest_names(current)
        if suggestions:
            st.selectbox("Suggested names", suggestions, index=None, key=actions.SUGGESTION,
                         placeholder="Pick a suggestion from the anchors", on_change=actions.use_suggestion,
                         disabled=locked)
        name_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
        name_col.text_input("New name", key=actions.NEW_NAME, max_chars=200, disabled=locked)
        button_col.button("Rename cluster", key="review_rename", on_click=actions.rename,
                          args=(workspace, run_id, current), width="stretch", disabled=locked)
        others = [c for c in clusters["cluster"].tolist() if c != current]
        merge_col, merge_button = st.columns([3, 1], vertical_alignment="bottom")
        merge_col.multiselect("Clusters to merge into this one", others, key=actions.MERGE_SOURCES,
                              format_func=_option(clusters), disabled=locked)
        merge_button.button("Merge", key="review_merge", on_click=actions.merge, args=(workspace, run_id, current),
                            disabled=not others or locked, width="stretch")
        a, b = st.columns(2)
        if row["verified"]:
            a.button("Mark cluster not verified", key="review_unverify_cluster", on_click=actions.verify_cluster,
                     args=(workspace, run_id, current, False), width="stretch", disabled=locked)
        else:
            a.button("Verify cluster", key="review_verify_cluster", on_click=actions.verify_cluster,
                     args=(workspace, run_id, current, True), width="stretch", type="primary", disabled=locked)
        b.button("Split automatically", key="review_auto_split", on_click=actions.auto_split,
                 args=(workspace, run_id, current), width="stretch", disabled=locked,
                 help="Two sub-groups by k-means on the members' image and text features; the smaller one "
                      "becomes a new cluster.")
        sign_off_view.controls(workspace, session, current)
    members(workspace, session, current, visible)


def members(workspace: Workspace, session: ReviewSession, current: int, visible: Optional[np.ndarray] = None) -> None:
    """The cluster's images, most (or least) confident first, a page at a time, each selectable; only those that
    pass the map's filter (``visible`` positions) when one is set."""
    run_id = session.run_id
    if st.session_state.get("review_page_cluster") != current:
        st.session_state["review_page_cluster"] = current
        st.session_state.pop(CLUSTER_PAGE, None)  # page 1
    top = st.columns([2, 1, 1], vertical_alignment="center")
    least = top[0].toggle("Least confident first", key=LEAST_FIRST)
    frame = session.members(current, "least_confident" if least else "confidence")
    if visible is not None:
        frame = frame[frame["position"].isin(visible)]
        st.caption(f"{len(frame):,} of its images pass the map's filter.")
    shown = page_of(frame, CLUSTER_PAGE)
    top[1].button("Select this page", key="review_select_page", on_click=actions.select,
                  args=(run_id, shown["image_id"].tolist()), width="stretch", disabled=shown.empty)
    top[2].button("Select whole cluster", key="review_select_cluster", on_click=actions.select,
                  args=(run_id, frame.loc[~frame["excluded"], "image_id"].tolist()), width="stretch",
                  disabled=frame.empty)
    grid(workspace, run_id, shown, key="review_members")


def _selected_positions(session: ReviewSession) -> np.ndarray:
    ids = map_view.selected_ids(session.run_id)
    ids = ids[np.isin(ids, session.state.image_ids)]
    return session.state.positions(ids)


def selection_actions(workspace: Workspace, session: ReviewSession, clusters: pd.DataFrame, current: int) -> None:
    """What is selected (on the map or in a gallery) and what can be done with it, next to the map."""
    run_id, state = session.run_id, session.state
    pos = _selected_positions(session)
    st.subheader("Selection")
    if pos.size == 0:
        st.text("Nothing selected. Lasso or box-select points on\nthe map, or tick images in a gallery.")
        return
    counts = pd.Series(state.labels[pos]).value_counts()
    spread = ", ".join(f"{n} in cluster {c}" for c, n in counts.head(4).items()) + (" …" if len(counts) > 4 else "")
    st.text(f"{pos.size} image(s) selected ({spread}).")
    locked = bool(session.refusal("edit"))
    source = current if current in counts.index else int(counts.index[0])  # the cluster a split would take from
    others = [c for c in clusters["cluster"].tolist() if c != source] or clusters["cluster"].tolist()
    target = st.session_state.get(actions.MOVE_TARGET)  # set on every run, as the cluster in current_cluster
    st.session_state[actions.MOVE_TARGET] = target if target in clusters["cluster"].tolist() else others[0]
    move, button = st.columns([3, 2], vertical_alignment="bottom")
    move.selectbox("Move to", clusters["cluster"].tolist(), key=actions.MOVE_TARGET, format_func=_option(clusters))
    button.button("Move selected", key="review_move", on_click=actions.move_selection, args=(workspace, run_id),
                  width="stretch", disabled=locked)
    a, b = st.columns(2)
    a.button("Verify selected", key="review_verify_images", on_click=actions.verify_selection,
             args=(workspace, run_id, True), width="stretch", disabled=locked)
    b.button("Mark not verified", key="review_unverify_images", on_click=actions.verify_selection,
             args=(workspace, run_id, False), width="stretch", disabled=locked)
    a.button("Exclude selected", key="review_exclude", on_click=actions.exclude_selection,
             args=(workspace, run_id, True), width="stretch", disabled=locked)
    b.button("Include selected", key="review_include", on_click=actions.exclude_selection,
             args=(workspace, run_id, False), width="stretch", disabled=locked or not state.excluded[pos].any())
    a.button("Split off selection", key="review_split_selection", on_click=actions.split_selection,
             args=(workspace, run_id, source), width="stretch", disabled=locked,
             help=f"The {int(counts[source])} selected image(s) of cluster {source} become a new cluster"
                  + ("; selected images of other clusters stay where they are." if len(counts) > 1 else "."))
    b.button("Clear selection", key="review_clear_selection", on_click=actions.clear_selection, args=(run_id,),
             width="stretch")
    unsorted = review_intake.unsorted_selection(session, state.image_ids[pos])
    if unsorted.size:
        st.button("New cluster from selection", key="review_unsorted_cluster", type="primary", width="stretch",
                  on_click=actions.cluster_unsorted, args=(workspace, run_id), disabled=locked,
                  help=review_intake.unsorted_help(unsorted.size))


def selection_gallery(workspace: Workspace, session: ReviewSession) -> None:
    """Thumbnails of the selected images (untick one to drop it from the selection)."""
    pos = _selected_positions(session)
    if pos.size == 0:
        return
    st.divider()
    st.subheader(f"Selected images ({pos.size})")
    frame = session.images(np.sort(pos))
    grid(workspace, session.run_id, page_of(frame, SELECTION_PAGE), key="review_selected")


def history(session: ReviewSession) -> None:
    """The last events of the run's log, newest first, each with who made it (text only)."""
    entries = session.history()[-HISTORY_ROWS:][::-1]
    with st.expander(f"Edit history ({len(session.history())} events)"):
        if not entries:
            st.text("No edits yet.")
            return
        latest = entries[0]
        st.text(f"Latest: #{latest['event_id']} by {latest['user']}, {latest['ts'][11:19]} UTC: {latest['text']}")
        st.dataframe(pd.DataFrame({"#": [e["event_id"] for e in entries],
                                   "When (UTC)": [e["ts"][:19].replace("T", " ") for e in entries],
                                   "User": [e["user"] for e in entries],
                                   "Action": [e["text"] for e in entries],
                                   "Undone": [e["undone"] for e in entries],
                                   "Session": [e["session"] for e in entries]}), hide_index=True)
