"""The Review page's map: a scatter of the run's fixed 2-D layout, one colour per cluster (or per value of a
metadata field), thumbnails of each cluster's most typical images at their points, the images an intake added
ringed as "new", lasso and box selection over every point. The browser draws it on a canvas
(:mod:`ui.map_canvas`); this module decides what it shows.

The map is a part of its own (``st.fragment``): a selection, a gallery or a verified mark never redraws it.
Its payload is built once per state of what it shows — labels, names, exclusions (keyed by the last event that
changed them, :meth:`~tac_core.workspace.review.ReviewSession.changed_at`, the same in every browser session),
the open cluster when it draws a sample, the thumbnail toggle, the colouring and filter (and the metadata they
read) — and kept per server process, so a rerun, a new browser session or an edit elsewhere sends the same
payload again, which Streamlit answers with a reference to the copy the browser already has.

What it draws is the engine's (:mod:`tac_core.cluster.map_sample`): every point up to 20,000, beyond that a
stable sample of each cluster at one rate plus every point of the open cluster, among the points that pass the
filter. A lasso or box selects every image inside it, drawn or not
(:func:`tac_core.workspace.review_selection.region_selection`), in the clusters whose drawn points it caught and
that the legend shows, among those that pass the filter. Groups are built in one place, :func:`build_payload`.
"""
from __future__ import annotations

import base64
import functools
import hashlib
from typing import NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from tac_core.cluster.map_sample import DRAW_BUDGET, draw_ranks, sample_positions, thumbnail_picks
from tac_core.errors import TacError
from tac_core.inputs.thumbnails import thumbnail_jpeg, thumbnail_path
from tac_core.workspace.metadata import metadata_version
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.review_selection import region_selection
from tac_core.workspace.workspace import Workspace
from ui import cluster_sizes, map_canvas, review_metadata
from ui import review_parts as parts
from ui.review_batches import batches_of, state_layout, state_paths
from ui.review_data import cluster_frame, part_session
from ui.safe_text import middle, short
from ui.state import show_error

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
           "#756bb1", "#636363", "#9c9ede", "#cedb9c", "#e7ba52", "#e7969c", "#de9ed6", "#6baed6", "#fd8d3c",
           "#74c476", "#9e9ac8", "#969696")
EXCLUDED_COLOUR = "#c8c8c8"
NEW_COLOUR = "#111111"
HEIGHT = 540
THUMBNAILS = "review_map_thumbnails"
THUMBNAIL_PIXELS = 48  # the map's thumbnails are sent inside its payload: small JPEGs
THUMBNAIL_SIZES = (0.06, 0.03, 0.014)  # per level, as a share of the map's extent: readable as one zooms in


def chart_key(run_id: int) -> str:
    return f"review_map_{int(run_id)}"


def colour(cluster: int) -> str:
    return PALETTE[int(cluster) % len(PALETTE)]


# -- the payload ------------------------------------------------------------------------------------------
ColourBy = tuple[str, np.ndarray, list[str]]  # a metadata field, its group per position, the groups' names


def build_payload(xy: np.ndarray, session: ReviewSession, drawn: np.ndarray, texts: str,
                  thumbnails: Sequence[tuple[int, int, str]] = (), height: int = HEIGHT,
                  colour_by: Optional[ColourBy] = None, shown: Optional[np.ndarray] = None) -> bytes:
    """The map's payload (:mod:`ui.map_canvas`): one group per existing cluster over the ``drawn`` positions
    (legend: id, name and the cluster's exact size) or, with ``colour_by``, per value of a metadata field (its
    exact count); excluded images in a grey group, hidden until shown in the legend; the images an intake added
    ringed as "new". Counts are over the ``shown`` positions (those that pass the filter; all when None).
    ``texts`` is the key of the points' hover texts; ``thumbnails`` are (position, level, image URI)."""
    state = session.state
    labels = state.included_labels()
    if colour_by is None:
        groups, keys = labels, sorted(state.names)
        names = {c: f"{c} · {short(state.names[c], 40)}" for c in keys}
    else:
        groups, keys = np.where(labels < 0, -1, colour_by[1]), list(range(len(colour_by[2])))
        names = {g: short(colour_by[2][g], 40) for g in keys}
    counted = groups if shown is None else groups[shown]
    sizes = np.bincount(counted + 1, minlength=max(keys, default=0) + 2)
    drawn_groups = groups[drawn]
    order = np.argsort(drawn_groups, kind="stable")
    sorted_groups = drawn_groups[order]
    layers = []
    for group in [-1, *keys]:  # the excluded first: drawn below the rest
        lo, hi = np.searchsorted(sorted_groups, [group, group + 1])
        rows = drawn[order[lo:hi]]
        if group == -1:
            if hi > lo:
                layers.append(map_canvas.Group("excluded", f"excluded ({sizes[0]})", EXCLUDED_COLOUR, rows, True))
        elif colour_by is None or hi > lo:  # a field's value no shown image has is left out
            layers.append(map_canvas.Group(f"g{group}", f"{names[group]} ({sizes[group + 1]})", colour(group), rows))
    extent = (*(float(v) for v in (xy[:, 0].min(), xy[:, 0].max(), xy[:, 1].min(), xy[:, 1].max())),) if len(xy) \
        else (0.0, 1.0, 0.0, 1.0)
    scale = max(extent[1] - extent[0], extent[3] - extent[2]) or 1.0
    new = drawn[drawn >= state.n_run]
    return map_canvas.encode(
        xy, layers, texts=texts, view=f"run-{session.run_id}", height=height,
        marker=3 if len(drawn) > 20000 else 5 if len(drawn) > 2000 else 8, extent=extent, rings=new,
        rings_label=f"new ({int(np.sum(state.new_mask()))})", ring_colour=NEW_COLOUR,
        thumbnails=[(xy[pos, 0], xy[pos, 1], THUMBNAIL_SIZES[level] * scale, uri) for pos, level, uri in thumbnails],
        legend_title=None if colour_by is None else short(colour_by[0], 30))


@functools.lru_cache(maxsize=20_000)
def thumbnail_uri(path: str) -> Optional[str]:
    """A small JPEG of a thumbnail file as a data URI (made once per file and server process: thumbnails are
    named by their image's content, so a path's answer never changes; a plain cache, ~150 look-ups a map)."""
    try:
        with Image.open(path) as image:
            data = thumbnail_jpeg(image.convert("RGB"), THUMBNAIL_PIXELS)
    except OSError:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


@st.cache_resource(show_spinner=False, max_entries=4)
def _ranks(workspace_path: str, run_id: int, n: int) -> np.ndarray:
    ranks = draw_ranks(n, seed=run_id)
    ranks.setflags(write=False)
    return ranks


@st.cache_resource(show_spinner=False, max_entries=8)
def _hover(workspace_path: str, run_id: int, batches: tuple, _rel_paths: pd.Series) -> np.ndarray:
    text = np.array([middle(path, 80) for path in _rel_paths.to_numpy()], dtype=object)
    text.setflags(write=False)
    return text


@st.cache_resource(show_spinner=False, max_entries=8)
def _texts(workspace_path: str, run_id: int, batches: tuple, drawn_digest: str, _ordered: np.ndarray,
           _hover: np.ndarray) -> bytes:
    """The hover texts of the drawn points (``_ordered``: their positions, ascending): the same bytes while the
    same points are drawn, whatever the edits."""
    return map_canvas.encode_texts(_ordered, _hover)


class MapPayload(NamedTuple):
    payload: bytes
    texts: bytes
    drawn: int  # points drawn
    shown: int  # points that pass the filter


@st.cache_resource(show_spinner=False, max_entries=8)
def _payload(workspace_path: str, run_id: int, version: int, focus: Optional[int], with_thumbnails: bool,
             view_key: tuple, metadata: Optional[tuple], _workspace: Workspace, _session: ReviewSession,
             _xy: np.ndarray, _view: review_metadata.MapView) -> MapPayload:
    """The map's payload for one state of what it shows (the arguments before the underscored ones)."""
    state = _session.state
    labels = state.included_labels()
    ranks = _ranks(workspace_path, run_id, len(labels))
    shown = _view.visible
    drawn = sample_positions(labels, ranks, focus=None if focus is None else labels == focus, shown=shown)
    paths = state_paths(_workspace, _session)
    thumbnails = []
    if with_thumbnails:
        candidates = labels if shown is None else np.where(np.isin(np.arange(len(labels)), shown), labels, -1)
        picks, levels = thumbnail_picks(_xy, candidates, state.confidence)
        shas = paths["sha256"].iloc[picks].to_numpy()
        for pos, level, sha in zip(picks.tolist(), levels.tolist(), shas):
            uri = thumbnail_uri(str(thumbnail_path(_workspace.thumbs_dir, sha)))
            if uri is not None:
                thumbnails.append((pos, level, uri))
    hover = _hover(workspace_path, run_id, batches_of(_session), paths["rel_path"])
    colour_by = None
    if _view.colour is not None:
        codes, names = review_metadata.colour_groups(review_metadata.review_metadata(_workspace, _session),
                                                     _view.colour)
        colour_by = (_view.colour, codes, names)
    ordered = np.sort(drawn).astype(np.int64)
    texts = _texts(workspace_path, run_id, batches_of(_session), hashlib.sha1(ordered.tobytes()).hexdigest(),
                   ordered, hover)
    payload = build_payload(_xy, _session, drawn, map_canvas.texts_key(texts), thumbnails, colour_by=colour_by,
                            shown=shown)
    return MapPayload(payload, texts, len(drawn), len(labels) if shown is None else len(shown))


def payload_for(workspace: Workspace, session: ReviewSession, xy: np.ndarray, with_thumbnails: bool,
                view: review_metadata.MapView) -> MapPayload:
    """The cached payload for the session's state and the map's view now."""
    n = len(session.state.labels)
    focus = st.session_state.get(parts.CLUSTER) if n > DRAW_BUDGET else None  # a sample holds the open cluster
    metadata = metadata_version(workspace) if view.colour is not None or view.visible is not None else None
    return _payload(str(workspace.path), session.run_id, session.changed_at(*parts.MAP_DEPENDS_ON), focus,
                   with_thumbnails, view.key, metadata, workspace, session, xy, view)


# -- selecting on the map ----------------------------------------------------------------------------------
def select_from_event(workspace: Workspace, run_id: int, xy: np.ndarray) -> None:
    """The map's ``on_select``: every image inside the drawn boxes and lassos, in the clusters whose drawn
    points the selection caught (a legend-hidden cluster is left out) and among those that pass the filter,
    replaces the selection."""
    selection = map_canvas.selection(chart_key(run_id))
    session = part_session(workspace, run_id)
    positions = np.asarray([p for p in selection.get("points") or () if isinstance(p, int)], np.int64)
    positions = positions[(positions >= 0) & (positions < len(session.state.labels))]
    clusters = np.unique(session.state.labels[positions]) if positions.size else np.zeros(0, np.int64)
    boxes, lassos = selection.get("box") or [], selection.get("lasso") or []
    shown = review_metadata.map_view_of(workspace, session).visible
    ids = (region_selection(session.state, xy, boxes, lassos, clusters.tolist(), shown) if (boxes or lassos)
           else session.state.image_ids[positions[~session.state.excluded[positions]]])
    parts.set_selection(run_id, ids)
    parts.redraw(*parts.SELECTION_PARTS)


def _filtered() -> None:
    """A new filter: the map and the open cluster's gallery (which shows only what passes it) redraw."""
    parts.redraw(parts.MAP, parts.MEMBERS)


@st.fragment(key=parts.MAP)
def map_part(workspace: Workspace, run_id: int) -> None:
    """The map with its colouring, filter and thumbnail toggle, and a caption saying what is drawn."""
    session = part_session(workspace, run_id)
    try:
        xy, source = state_layout(workspace, session)
    except TacError as exc:
        show_error(exc, "load the map of this run")
        return
    view = review_metadata.map_controls(workspace, session, on_filter=_filtered)
    with_thumbnails = st.toggle("Thumbnails on the map", value=True, key=THUMBNAILS,
                                help="Each cluster's most typical images at their points; smaller ones become "
                                     "readable as you zoom in (scroll).")
    payload, texts, drawn, shown = payload_for(workspace, session, xy, with_thumbnails, view)
    map_canvas.review_map(payload, texts, chart_key(run_id), lambda: select_from_event(workspace, run_id, xy))
    n = len(xy)
    what = f"all {n:,} images" if drawn >= n else (
        f"{drawn:,} of {n:,} images" + (f" ({shown:,} pass the filter)" if shown < n else "")
        + (" (every cluster at one rate, all of the open one)" if drawn < shown else ""))
    st.caption(f"Layout: {source}. Drawn: {what}. Lasso or box-select to select every image inside; "
               "double-click to clear. Click a legend entry to hide or show a group."
               + (" New images are ringed." if session.state.batches else ""))
    cluster_sizes.render(workspace, session, cluster_frame(session))  # sizes change when the map does
