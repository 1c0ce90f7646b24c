"""The Review page's selection parts: what is selected (on the map or in a gallery) with the actions on it,
and right under them the selection's gallery (a part of its own: a rename changes the actions' cluster names,
not the gallery).

Keys: M moves the selection to the cluster in "Move to", X excludes it; selected images an intake left unsorted
can become a cluster of their own. The selection itself is view state
(:mod:`ui.review_parts`); every action here is one event (:mod:`ui.review_actions`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import Workspace
from ui import review_actions as actions
from ui import review_intake
from ui import review_parts as parts
from ui.gallery import grid, page_of
from ui.review_clusters import option
from ui.review_data import cluster_frame, part_session

SELECTION_PAGE = "review_selection_page"


def selected_positions(session: ReviewSession) -> np.ndarray:
    ids = parts.selected_ids(session.run_id)
    ids = ids[np.isin(ids, session.state.image_ids)]
    return session.state.positions(ids)


@st.fragment(key=parts.SELECTION)
def selection_part(workspace: Workspace, run_id: int) -> None:
    session = part_session(workspace, run_id)
    state, clusters = session.state, cluster_frame(session)
    pos = selected_positions(session)
    st.subheader("Selection", anchor=False)
    if pos.size == 0:
        st.text("Nothing selected. Lasso or box-select points on the map,\nor tick images in a gallery.")
        return
    counts = pd.Series(state.labels[pos]).value_counts()
    spread = ", ".join(f"{n} in cluster {c}" for c, n in counts.head(4).items()) + (" …" if len(counts) > 4 else "")
    st.text(f"{pos.size} image(s) selected ({spread}).")
    ids = clusters["cluster"].tolist()
    locked = bool(session.refusal("edit"))  # the toolbar says why
    source = int(counts.index[0])  # the cluster a split takes from: the one most of the selection is in
    others = [c for c in ids if c != source] or ids
    target = st.session_state.get(actions.MOVE_TARGET)  # set on every run (see current_cluster)
    st.session_state[actions.MOVE_TARGET] = target if target in ids else others[0]
    move, button = st.columns([3, 2], vertical_alignment="bottom")
    move.selectbox("Move to", ids, key=actions.MOVE_TARGET, format_func=option(clusters))
    button.button("Move selected", key="review_move", on_click=actions.move_selection, args=(workspace, run_id),
                  width="stretch", shortcut="M", disabled=locked)
    a, b, c = st.columns(3)
    a.button("Verify selected", key="review_verify_images", on_click=actions.verify_selection,
             args=(workspace, run_id, True), width="stretch", disabled=locked)
    b.button("Mark not verified", key="review_unverify_images", on_click=actions.verify_selection,
             args=(workspace, run_id, False), width="stretch", disabled=locked or not state.verified[pos].any())
    c.button("Clear selection", key="review_clear_selection", on_click=actions.clear_selection, args=(run_id,),
             width="stretch")
    a.button("Exclude selected", key="review_exclude", on_click=actions.exclude_selection,
             args=(workspace, run_id, True), width="stretch", shortcut="X", disabled=locked)
    b.button("Include selected", key="review_include", on_click=actions.exclude_selection,
             args=(workspace, run_id, False), width="stretch", disabled=locked or not state.excluded[pos].any())
    c.button("Split off selection", key="review_split_selection", on_click=actions.split_selection,
             args=(workspace, run_id, source), width="stretch", disabled=locked,
             help=f"The {int(counts[source])} selected image(s) of cluster {source} become a new cluster"
                  + ("; selected images of other clusters stay where they are." if len(counts) > 1 else "."))
    unsorted = review_intake.unsorted_selection(session, state.image_ids[pos])
    if unsorted.size:
        st.button("New cluster from selection", key="review_unsorted_cluster", type="primary", width="stretch",
                  on_click=actions.cluster_unsorted, args=(workspace, run_id), disabled=locked,
                  help=review_intake.unsorted_help(unsorted.size))


@st.fragment(key=parts.SELECTED)
def selected_part(workspace: Workspace, run_id: int) -> None:
    """The selected images, a page at a time (untick one to drop it from the selection)."""
    session = part_session(workspace, run_id)
    pos = selected_positions(session)
    if pos.size:
        grid(workspace, run_id, session.images(page_of(np.sort(pos), SELECTION_PAGE)), key="review_selected")
