"""The run's map: a WebGL scatter of the fixed 2-D layout, one trace per cluster (or per value of a metadata
field), the images an intake added ringed as "new", with lasso/box selection.

Cost per rerun at 50k points is a few tens of ms: the layout is a cached array, traces are grouped with one
argsort, the figure is built without Plotly's per-property validation (``_validate=False``; every value is
a plain numpy array or string made here) and serialised as typed arrays. Only colours and legend entries
change after an edit; positions never do.

The selection is view state: ``st.session_state[selection_key(run)]`` holds the selected image ids. A lasso
or box on the map replaces it (in the chart's ``on_select`` callback, which runs before the page script, so
the whole page draws the new selection); double-clicking the map empties it.
"""
from __future__ import annotations

from typing import Optional

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
NEW_COLOUR = "#111111"
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


def build_figure(xy: np.ndarray, session: ReviewSession, height: int = 560, shown: Optional[np.ndarray] = None,
                 colour_by: Optional[tuple[str, np.ndarray, list[str]]] = None) -> go.Figure:
    """One trace per existing cluster (legend: id and name) or, with ``colour_by`` (field, group per position,
    group names), per value of a metadata field; excluded images in a hidden grey trace; then the images an
    intake added, ringed ("new"). ``shown``: the positions that pass the page's filter (None: all)."""
    state = session.state
    labels = state.included_labels()
    groups = labels if colour_by is None else np.where(labels < 0, -1, colour_by[1])
    keys = sorted(state.names) if colour_by is None else list(range(len(colour_by[2])))
    visible_rows = np.arange(len(labels)) if shown is None else np.asarray(shown, np.int64)
    order = visible_rows[np.argsort(groups[visible_rows], kind="stable")]
    sorted_groups = groups[order]
    ids = state.image_ids
    kind = "scattergl" if len(labels) >= WEBGL_FROM else "scatter"
    size = 3 if len(labels) > 20000 else 5 if len(labels) > 2000 else 8
    custom = ids.astype(np.int32 if ids.max(initial=0) < 2**31 else np.float64)
    traces = []
    for group in [*keys, -1]:
        lo, hi = np.searchsorted(sorted_groups, [group, group + 1])
        if hi == lo:
            continue
        rows = order[lo:hi]
        if group == -1:
            name, marker, visible = f"excluded ({hi - lo})", {"size": size, "color": EXCLUDED_COLOUR}, "legendonly"
        elif colour_by is None:
            name = f"{group} · {plotly_text(state.names[group], 40)} ({hi - lo})"
            marker, visible = {"size": size, "color": colour(group)}, True
        else:
            name = f"{plotly_text(colour_by[2][group], 40)} ({hi - lo})"
            marker, visible = {"size": size, "color": colour(group)}, True
        traces.append({"type": kind, "mode": "markers", "x": xy[rows, 0], "y": xy[rows, 1], "customdata": custom[rows],
                       "name": name, "marker": marker, "visible": visible,
                       "hovertemplate": "image %{customdata}<extra>%{fullData.name}</extra>"})
    new = visible_rows[visible_rows >= state.n_run]
    if len(new):  # the images an intake added, ringed above their group's point
        traces.append({"type": kind, "mode": "markers", "x": xy[new, 0], "y": xy[new, 1], "customdata": custom[new],
                       "name": f"new ({len(new)})", "hovertemplate": "new image %{customdata}<extra></extra>",
                       "marker": {"size": size + 6, "color": NEW_COLOUR, "symbol": "circle-open",
                                  "line": {"width": 1.5, "color": NEW_COLOUR}}})
    title = "Clusters" if colour_by is None else plotly_text(colour_by[0], 30)
    fig_layout = {"height": height, "margin": {"l": 0, "r": 0, "t": 10, "b": 0}, "dragmode": "lasso",
                  "uirevision": f"run-{session.run_id}",
                  "legend": {"itemsizing": "constant", "title": {"text": title}},
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


def render(xy: np.ndarray, session: ReviewSession, source: str, shown: Optional[np.ndarray] = None,
           colour_by: Optional[tuple[str, np.ndarray, list[str]]] = None) -> None:
    """Draw the map (``shown`` and ``colour_by`` as :func:`build_figure`); a lasso or box selection replaces the
    selection."""
    run_id = session.run_id

    def on_select() -> None:
        set_selection(run_id, ids_from_event(st.session_state.get(chart_key(run_id))))

    fig = build_figure(xy, session, shown=shown, colour_by=colour_by)
    st.plotly_chart(fig, key=chart_key(run_id), on_select=on_select, selection_mode=("lasso", "box"),
                    config={"displaylogo": False, "scrollZoom": True}, width="stretch")
    st.caption(f"Layout: {source}. Lasso or box-select points to select images; double-click to clear. "
               "Click a legend entry to hide a group." + (" New images are ringed." if session.state.batches else ""))
