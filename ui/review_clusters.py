"""The Review page's cluster parts: the cluster list with the open cluster's actions, and its gallery.

The list shows every cluster in one narrow table (no horizontal scrolling beside the map at 1,400 px); a row
click, the "Cluster" select box or the N / P keys open a cluster. The open cluster's actions sit right under
the list: rename (with suggestions from its anchors), merge others into it, verify (V), split automatically,
its sign-off (:mod:`ui.sign_off_view`) and where its images come from (:mod:`ui.review_metadata`). Its gallery is
a part of its own, so paging through it redraws nothing else; it shows only the images that pass the map's
filter.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import Workspace
from ui import review_actions as actions
from ui import review_metadata
from ui import review_parts as parts
from ui import sign_off_view
from ui.gallery import grid, page_of
from ui.review_data import cluster_frame, part_session
from ui.safe_text import esc, short
from ui.widgets import coverage_column

TABLE = "review_cluster_table"
LEAST_FIRST = "review_least_first"
CLUSTER_PAGE = "review_page"
TABLE_ORDER = "review_table_order"


def option(clusters: pd.DataFrame):
    """How a cluster reads in a select box: "id · name (size)"."""
    names = dict(zip(clusters["cluster"], clusters["name"]))
    sizes = dict(zip(clusters["cluster"], clusters["size"]))
    return lambda c: short(f"{c} · {names.get(c, '?')} ({sizes.get(c, 0)})", 80)


def current_cluster(session: ReviewSession, clusters: pd.DataFrame) -> int:
    """The open cluster (view state); falls back to the largest when it was merged away."""
    ids = clusters["cluster"].tolist()
    if st.session_state.get(parts.CLUSTER) not in ids:
        st.session_state[parts.CLUSTER] = int(clusters.sort_values("size", ascending=False)["cluster"].iloc[0])
    current = int(st.session_state[parts.CLUSTER])
    # set again on every run: the select box shows "id · name (size)", and a browser keeps the label it was last
    # sent, so after a rename or a merge it would send back a label that no longer matches any option
    st.session_state[parts.CLUSTER] = current
    if st.session_state.get("review_inputs_for") != (session.run_id, current):
        st.session_state["review_inputs_for"] = (session.run_id, current)  # another cluster: clear its inputs
        st.session_state[actions.NEW_NAME] = ""
        st.session_state[actions.MERGE_SOURCES] = []
    else:  # a cluster merged away by another session must not linger in the merge choice
        st.session_state[actions.MERGE_SOURCES] = [c for c in st.session_state.get(actions.MERGE_SOURCES, [])
                                                   if c in ids and c != current]
    return current


def open_cluster_id(clusters: pd.DataFrame) -> int:
    """The open cluster as :func:`current_cluster` set it, read only (for parts drawn after the select box)."""
    chosen = st.session_state.get(parts.CLUSTER)
    if chosen in set(clusters["cluster"].tolist()):
        return int(chosen)
    return int(clusters.sort_values("size", ascending=False)["cluster"].iloc[0])


def _on_table_select(workspace: Workspace, run_id: int) -> None:
    state = st.session_state.get(TABLE)
    rows = state["selection"]["rows"] if state else []
    order = st.session_state.get(TABLE_ORDER, [])
    if rows and rows[0] < len(order):
        st.session_state[parts.CLUSTER] = order[rows[0]]
    actions.opened(workspace, run_id)


@st.fragment(key=parts.CLUSTERS)
def clusters_part(workspace: Workspace, run_id: int) -> None:
    session = part_session(workspace, run_id)
    clusters = cluster_frame(session)
    current = current_cluster(session, clusters)
    cluster_table(workspace, run_id, clusters)
    review_metadata.findings(workspace, session)
    cluster_panel(workspace, session, clusters, current)


def cluster_table(workspace: Workspace, run_id: int, clusters: pd.DataFrame) -> None:
    """Every cluster: size, name, excluded, coverage, verified, confidence. Click a row to open it."""
    table = pd.DataFrame({
        "ID": clusters["cluster"], "Name": clusters["name"], "Size": clusters["size"],
        "Excl.": clusters["excluded"], "Coverage": (clusters["verified_share"] * 100).round(),
        "Verified": clusters["verified"], "Conf.": clusters["mean_confidence"],
        "Approved": sign_off_view.approved_column(clusters)})
    st.session_state[TABLE_ORDER] = table["ID"].tolist()
    st.dataframe(table, key=TABLE, on_select=lambda: _on_table_select(workspace, run_id),
                 selection_mode="single-row", hide_index=True, height=min(282, 38 + 35 * len(table)),
                 column_config={  # narrow enough to read whole beside the map at 1,400 px
                     "ID": st.column_config.NumberColumn("ID", width=34),
                     "Name": st.column_config.TextColumn("Name", width=100),
                     "Size": st.column_config.NumberColumn("Size", width=50),
                     "Excl.": st.column_config.NumberColumn("Excl.", width=40, help="Excluded images"),
                     "Coverage": coverage_column(width=66),
                     "Verified": st.column_config.CheckboxColumn("✓", width=30, help="Verified cluster"),
                     "Conf.": st.column_config.NumberColumn("Conf.", format="%.2f", width=44,
                                                            help="Mean confidence"),
                     "Approved": st.column_config.TextColumn("Appr.", width=50,
                                                             help="Approved by whom and when (sign-off)")})


def cluster_panel(workspace: Workspace, session: ReviewSession, clusters: pd.DataFrame, current: int) -> None:
    """The open cluster: what it is, and the actions on it."""
    run_id = session.run_id
    ids = clusters["cluster"].tolist()
    row = clusters.set_index("cluster").loc[current]
    pick, back, forward = st.columns([5, 2, 2], vertical_alignment="bottom")
    pick.selectbox("Cluster", ids, key=parts.CLUSTER, format_func=option(clusters),
                   on_change=actions.opened, args=(workspace, run_id))
    back.button("Prev", key="review_previous_cluster", shortcut="P", width="stretch", help="Previous cluster",
                on_click=actions.step_cluster, args=(workspace, run_id, ids, -1))
    forward.button("Next", key="review_next_cluster", shortcut="N", width="stretch", help="Next cluster",
                   on_click=actions.step_cluster, args=(workspace, run_id, ids, 1))
    anchors = ", ".join(f"{term} {score:.2f}" for term, score in session.anchors(current)[:6])
    name, mark = st.columns([5, 3])
    name.text(f"Name: {row['name']}")
    mark.text("Verified cluster" if row["verified"] else "Not verified")
    st.text(f"{int(row['size'])} images · {int(row['excluded'])} excluded · coverage {row['verified_share']:.0%} · "
            f"mean confidence {row['mean_confidence']:.2f}\n"
            f"Anchors: {anchors or 'none (a split-off cluster gets them at the next clustering)'}")
    locked = bool(session.refusal("edit"))  # the toolbar says why
    name_col, button_col = st.columns([5, 3], vertical_alignment="bottom")
    name_col.text_input("New name", key=actions.NEW_NAME, max_chars=200, disabled=locked)
    button_col.button("Rename cluster", key="review_rename", on_click=actions.rename,
                      args=(workspace, run_id, current), width="stretch", disabled=locked)
    suggestions = session.suggest_names(current)
    if suggestions:
        st.pills("Suggested names", suggestions, key=actions.SUGGESTION, on_change=actions.use_suggestion,
                 format_func=esc, label_visibility="collapsed", disabled=locked,
                 help="Names from the cluster's anchors: click one to use it")
    others = [c for c in ids if c != current]
    merge_col, merge_button = st.columns([5, 3], vertical_alignment="bottom")
    merge_col.multiselect("Clusters to merge into this one", others, key=actions.MERGE_SOURCES,
                          format_func=option(clusters), disabled=locked)
    merge_button.button("Merge", key="review_merge", on_click=actions.merge, args=(workspace, run_id, current),
                        disabled=not others or locked, width="stretch")
    a, b = st.columns(2)
    if row["verified"]:
        a.button("Mark cluster not verified", key="review_unverify_cluster", on_click=actions.verify_cluster,
                 args=(workspace, run_id, current, False), width="stretch", shortcut="V", disabled=locked)
    else:
        a.button("Verify cluster", key="review_verify_cluster", on_click=actions.verify_cluster,
                 args=(workspace, run_id, current, True), width="stretch", type="primary", shortcut="V",
                 disabled=locked)
    b.button("Split automatically", key="review_auto_split", on_click=actions.auto_split,
             args=(workspace, run_id, current), width="stretch", disabled=locked,
             help="Two sub-groups by k-means on the members' image and text features; the smaller one "
                  "becomes a new cluster.")
    sign_off_view.controls(workspace, session, current)
    review_metadata.cluster_sources(workspace, session, current)


@st.fragment(key=parts.MEMBERS)
def members_part(workspace: Workspace, run_id: int) -> None:
    """The open cluster's images, most (or least) confident first, a page at a time, each selectable; only
    those that pass the map's filter when one is set."""
    session = part_session(workspace, run_id)
    current = open_cluster_id(cluster_frame(session))
    if st.session_state.get("review_page_cluster") != current:
        st.session_state["review_page_cluster"] = current
        st.session_state.pop(CLUSTER_PAGE, None)  # page 1
    st.subheader(esc(short(f"Cluster {current} · {session.state.names[current]}", 60)), anchor=False)
    top = st.columns([4, 3, 3], vertical_alignment="center")
    least = top[0].toggle("Least confident first", key=LEAST_FIRST)
    positions = session.member_positions(current, "least_confident" if least else "confidence")
    visible = review_metadata.map_view_of(workspace, session).visible
    if visible is not None:
        positions = positions[np.isin(positions, visible)]
        st.caption(f"{len(positions):,} of its images pass the map's filter.")
    shown = page_of(positions, CLUSTER_PAGE)
    top[1].button("Select page", key="review_select_page", on_click=actions.select_positions,
                  args=(workspace, run_id, shown), width="stretch", disabled=not len(shown))
    top[2].button("Select cluster", key="review_select_cluster", on_click=actions.select_positions,
                  args=(workspace, run_id, positions), width="stretch", disabled=not len(positions))
    grid(workspace, run_id, session.images(shown), key="review_members")
