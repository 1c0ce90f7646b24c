"""Metadata on the Review page: the map's colouring and filter (by a field, new images only), the open cluster's
bar chart of where its images come from, and the clusters one value dominates (the engine's flag,
:mod:`tac_core.workspace.metadata_summary`).

The metadata of a review's images is read once per state of the review's image list and of the workspace's
metadata (:func:`tac_core.workspace.metadata.metadata_version`) and kept per server process; the choices are
view state, shared by the map and the galleries.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np
import pandas as pd
import streamlit as st

from tac_core.workspace.metadata import metadata_version
from tac_core.workspace.metadata_summary import dominance_flags, field_breakdown, state_metadata
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import Workspace
from ui.safe_text import esc, short

COLOUR = "review_colour_by"
CLUSTER_COLOURING = "Cluster"
FILTER_FIELD = "review_filter_field"
FILTER_VALUES = "review_filter_values"
NEW_ONLY = "review_new_only"
CHART_FIELD = "review_chart_field"
CHART_CLUSTER = "review_chart_cluster"
NO_VALUE = "(none)"


class MapView(NamedTuple):
    """What the map shows: ``colour`` (None: by cluster, else a field), ``visible`` (positions that pass the
    filter, None: all) and ``key`` (a hashable summary of both, for the figure's cache)."""

    colour: Optional[str]
    visible: Optional[np.ndarray]
    key: tuple


@st.cache_resource(show_spinner=False, max_entries=8)
def _table(workspace_path: str, run_id: int, n: int, batches: tuple, version: tuple, _workspace: Workspace,
           _session: ReviewSession) -> pd.DataFrame:
    return state_metadata(_workspace, _session.state)


def review_metadata(workspace: Workspace, session: ReviewSession) -> pd.DataFrame:
    """The fields of the review's images, one row per position ("" when missing); shared, do not modify."""
    state = session.state
    return _table(str(workspace.path), session.run_id, len(state.image_ids),
                  tuple(batch for batch, _, _ in state.batches), metadata_version(workspace), workspace, session)


def map_controls(workspace: Workspace, session: ReviewSession, on_filter: Optional[Callable[[], None]] = None
                 ) -> MapView:
    """Colour by cluster or a field; show only some values of a field, or only the new images. ``on_filter``
    runs when the filter changes (it also limits the galleries). Nothing is drawn when there is nothing to
    choose (no metadata, no new images)."""
    table = review_metadata(workspace, session)
    fields = list(table.columns)
    state = session.state
    if not fields and not state.batches:
        return map_view_of(workspace, session)
    if st.session_state.get(COLOUR) not in [CLUSTER_COLOURING, *fields]:
        st.session_state[COLOUR] = CLUSTER_COLOURING
    cols = st.columns([1, 1, 1.4], vertical_alignment="bottom")
    cols[0].selectbox("Colour by", [CLUSTER_COLOURING, *fields], key=COLOUR,
                      help="Colour the points by cluster or by a metadata field (Images page).")
    if st.session_state.get(FILTER_FIELD) not in [None, *fields]:
        st.session_state[FILTER_FIELD] = None
    field = cols[1].selectbox("Filter by", fields, index=None, key=FILTER_FIELD, placeholder="no filter",
                              disabled=not fields, format_func=lambda f: short(f, 40), on_change=on_filter)
    values = sorted(set(table[field]) - {""}) if field else []
    st.session_state[FILTER_VALUES] = [v for v in st.session_state.get(FILTER_VALUES, []) if v in values]
    cols[2].multiselect("Values", values, key=FILTER_VALUES, disabled=not field,
                        format_func=lambda v: short(v, 40), on_change=on_filter)
    if state.batches:
        st.toggle("New images only", key=NEW_ONLY, help="Only the images added after the run (by an intake).",
                  on_change=on_filter)
    return map_view_of(workspace, session)


def map_view_of(workspace: Workspace, session: ReviewSession) -> MapView:
    """What the map shows now, from the choices :func:`map_controls` keeps (without drawing them)."""
    table = review_metadata(workspace, session)
    state = session.state
    colour = st.session_state.get(COLOUR)
    colour_field = colour if colour in table.columns else None
    field = st.session_state.get(FILTER_FIELD)
    field = field if field in table.columns else None
    chosen = list(st.session_state.get(FILTER_VALUES) or []) if field else []
    new_only = bool(state.batches) and bool(st.session_state.get(NEW_ONLY))
    visible = np.ones(len(state.labels), bool)
    if new_only:
        visible &= state.new_mask()
    if field and chosen:
        visible &= np.isin(table[field].to_numpy(), chosen)
    shown = None if visible.all() else np.flatnonzero(visible)
    return MapView(colour_field, shown, (colour_field, field, tuple(chosen), new_only))


def colour_groups(table: pd.DataFrame, field: str) -> tuple[np.ndarray, list[str]]:
    """Per position, the index of its value of ``field`` among the returned names (most common first; images
    without a value are :data:`NO_VALUE`, last)."""
    values = table[field].to_numpy()
    counts = pd.Series(values[values != ""]).value_counts()
    names = [str(v) for v in counts.index] + ([NO_VALUE] if (values == "").any() else [])
    codes = pd.Categorical(np.where(values == "", NO_VALUE, values), categories=names).codes.astype(np.int64)
    return codes, names


def cluster_sources(workspace: Workspace, session: ReviewSession, cluster: int) -> None:
    """Where the open cluster's images come from: a bar chart of one field's values (the cluster against all
    images) and, in words, each field one value dominates in it."""
    table = review_metadata(workspace, session)
    if table.empty or not len(table.columns):
        return
    state = session.state
    flags = [flag for flag in dominance_flags(state, table) if flag.cluster == cluster]
    for flag in flags:
        st.warning(esc(flag.text))
    fields = list(table.columns)
    if st.session_state.get(CHART_FIELD) not in fields or st.session_state.get(CHART_CLUSTER) != cluster:
        st.session_state[CHART_CLUSTER] = cluster  # another cluster: open on the field that stands out in it
        st.session_state[CHART_FIELD] = flags[0].field if flags else fields[0]
    field = st.selectbox("Where its images come from", fields, key=CHART_FIELD)
    breakdown = field_breakdown(state.included_labels(), table[field].to_numpy())
    mine = breakdown[breakdown["cluster"] == cluster].head(12)
    if mine.empty:
        st.text(f"None of its images has a {field}.")
        return
    chart = pd.DataFrame({"this cluster": mine["share"].to_numpy(), "all images": mine["overall"].to_numpy()},
                         index=[short(v, 30) for v in mine["value"]])
    st.bar_chart(chart, horizontal=True, stack=False, height=90 + 36 * len(chart), y_label="",
                 x_label="share of the images", color=["#9ecae1", "#08519c"])


def findings(workspace: Workspace, session: ReviewSession) -> None:
    """Every cluster one value of a field dominates, in words (nothing when none is)."""
    table = review_metadata(workspace, session)
    if table.empty or not len(table.columns):
        return
    flags = dominance_flags(session.state, table)
    if not flags:
        return
    with st.expander(f"Clusters that come mostly from one line, camera, … ({len(flags)})"):
        for flag in flags:
            st.text(flag.text)
