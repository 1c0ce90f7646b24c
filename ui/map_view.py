"""The run's map: a WebGL scatter of the fixed 2-D layout, one trace per cluster, with lasso/box selection.

Cost per rerun at 50k points is a few tens of ms: the layout is a cached array, traces are grouped with one
argsort, the figure is built without Plotly's per-property validation (``_validate=False``; every value is
a plain numpy array or string made here) and serialised as typed arrays. Only colours and legend entries
change after an edit; positions never do.

The selection is view state: ``st.session_state[selection_key(run)]`` holds the selected image ids. A lasso
or box on the map replaces it (in the chart's ``on_select`` callback, which runs before the page script, so
the whole page draws the new selection); double-clicking the map empties it.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from tac_core.workspace.review import ReviewSession
from ui.safe_text import plotly_text

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
           "#756bb1", "#636363", "#9c9ede", "#cedb9c", "#e7ba52", "#e7969c", "#de9ed6", "#6baed6", "#fd8d3c",
           "#74c476", "#9e9ac8", "#969696")
EXCLUDED_COLOUR = "#c8c8c8"
WEBGL_FROM = 2000  # below this many points SVG draws crisper and is just as fast


def selection_key(run_id: int) -> str:
    return f"review_selection_{int(run_id)}"


def chart_key(run_id: int) -> str:
    return f"review_map_{int(run_id)}"


def selected_ids(run_id: int) -> np.ndarray:
    """The selected image ids (sorted, unique)."""
    return np.unique(np.asarray(st.session_state.get(selection_key(run_id), []), dtype=np.int64))


def set_selection(run_id: int, image_ids) -> None:
    st.session_state[selection_key(run_id)] = np.unique(np.asarray(image_ids, dtype=np.int64)).tolist()


def colour(cluster: int) -> str:
    return PALETTE[int(cluster) % len(PALETTE)]


def build_figure(xy: np.ndarray, session: ReviewSession, height: int = 560) -> go.Figure:
    """One trace per existing cluster (legend: id and name), excluded images in a hidden grey trace."""
    state = session.state
    labels = state.included_labels()
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    ids = state.image_ids
    kind = "scattergl" if len(labels) >= WEBGL_FROM else "scatter"
    size = 3 if len(labels) > 20000 else 5 if len(labels) > 2000 else 8
    traces = []
    for cluster in [*sorted(state.names), -1]:
        lo, hi = np.searchsorted(sorted_labels, [cluster, cluster + 1])
        if hi == lo and cluster != -1:
            continue
        rows = order[lo:hi]
        if cluster == -1:
            if hi == lo:
                continue
            name, marker, visible = f"excluded ({hi - lo})", {"size": size, "color": EXCLUDED_COLOUR}, "legendonly"
        else:
            name = f"{cluster} · {plotly_text(state.names[cluster], 40)} ({hi - lo})"
            marker, visible = {"size": size, "color": colour(cluster)}, True
        traces.append({"type": kind, "mode": "markers", "x": xy[rows, 0], "y": xy[rows, 1],
                       "customdata": ids[rows].astype(np.int32 if ids.max(initial=0) < 2**31 else np.float64),
                       "name": name, "marker": marker, "visible": visible,
                       "hovertemplate": "image %{customdata}<extra>%{fullData.name}</extra>"})
    fig_layout = {"height": height, "margin": {"l": 0, "r": 0, "t": 10, "b": 0}, "dragmode": "lasso",
                  "uirevision": f"run-{session.run_id}",
                  "legend": {"itemsizing": "constant", "title": {"text": "Clusters"}},
                  "xaxis": {"visible": False}, "yaxis": {"visible": False, "scaleanchor": "x"},
                  "clickmode": "event+select"}
    return go.Figure({"data": traces, "layout": fig_layout}, _validate=False)


def ids_from_event(event) -> np.ndarray:
    """Image ids of the points in a Plotly selection event (their ``customdata``)."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return np.zeros(0, np.int64)
    out = []
    for point in points or ():
        value = point.get("customdata")
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is not None:
            out.append(int(value))
    return np.unique(np.asarray(out, np.int64))


def render(xy: np.ndarray, session: ReviewSession, source: str) -> None:
    """Draw the map; a lasso or box selection replaces the selection."""
    run_id = session.run_id

    def on_select() -> None:
        set_selection(run_id, ids_from_event(st.session_state.get(chart_key(run_id))))

    fig = build_figure(xy, session)
    st.plotly_chart(fig, key=chart_key(run_id), on_select=on_select, selection_mode=("lasso", "box"),
                    config={"displaylogo": False, "scrollZoom": True}, width="stretch")
    st.caption(f"Layout: {source}. Lasso or box-select points to select images; double-click to clear. "
               "Click a legend entry to hide a cluster.")
