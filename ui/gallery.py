"""Thumbnail galleries: a paged grid of images, each with a checkbox that adds it to / removes it from the
selection, and small strips of example thumbnails.

Checkbox state is derived from the selection every rerun (it is set in session state just before the
checkbox is drawn), so the map, the galleries and the buttons always agree on what is selected. Ticking one
image selects it even when it is excluded (to include it again); bulk selections never take excluded images
(:mod:`tac_core.workspace.review_selection`). File names are drawn with ``st.text`` (never as Markdown), cut in
the middle so that a long name keeps its extension on one line. Thumbnails are served from their files
(always JPEG: nothing is decoded or re-encoded per rerun).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from tac_core.workspace.workspace import Workspace
from ui import review_parts as parts
from ui.review_data import image_source
from ui.safe_text import middle

PAGE_SIZE = 12
COLUMNS = 3
CAPTION_CHARS = 17  # a file name on one line under a thumbnail a third of a half-width column wide at 1,400 px


def page_of(rows: np.ndarray, key: str, page_size: int = PAGE_SIZE) -> np.ndarray:
    """The current page of ``rows`` (positions: their images' rows are then read for this page only); draws a
    "Page" pager under the caller's control when there are several."""
    pages = max(1, math.ceil(len(rows) / page_size))
    if st.session_state.get(key, 1) > pages:
        st.session_state.pop(key, None)  # back to page 1 (setting it would clash with the widget's default)
    page = st.pagination(pages, key=key, max_visible_pages=5) if pages > 1 else 1
    return rows[(page - 1) * page_size: page * page_size]


def _toggle(run_id: int, image_id: int, key: str) -> None:
    ids = parts.selected_ids(run_id)
    if st.session_state.get(key):
        parts.set_selection(run_id, np.union1d(ids, [image_id]))
    else:
        parts.set_selection(run_id, np.setdiff1d(ids, [image_id]))
    parts.redraw(*parts.SELECTION_PARTS)  # the image may be in both galleries


def show_image(workspace: Workspace, sha256: str, path: str) -> None:
    """The image's thumbnail (or a small browser-readable original), else a note."""
    source = image_source(workspace, sha256, path)
    if source is None:
        st.text("(no thumbnail)")
    else:
        st.image(source, width="stretch", output_format="JPEG" if source.endswith(".jpg") else "auto")


def caption(rel_path: str, confidence=None, verified: bool = False, excluded: bool = False, new: bool = False,
            chars: int = CAPTION_CHARS) -> str:
    """Two lines under a thumbnail: the file name cut in the middle, then confidence and flags ("new": added by
    an intake after the run)."""
    flags = [f"{confidence:.2f}"] if confidence is not None and not pd.isna(confidence) else []
    flags += ["verified"] * bool(verified) + ["excluded"] * bool(excluded) + ["new"] * bool(new)
    return f"{middle(rel_path, chars)}\n{' · '.join(flags)}"


def grid(workspace: Workspace, run_id: int, frame: pd.DataFrame, key: str, columns: int = COLUMNS,
         selectable: bool = True) -> None:
    """Thumbnails of ``frame`` rows (image_id, sha256, path, rel_path, confidence, verified, excluded)."""
    if frame.empty:
        st.text("No images here.")
        return
    chosen = set(parts.selected_ids(run_id).tolist()) if selectable else set()
    rows = list(frame.itertuples(index=False))
    for start in range(0, len(rows), columns):
        cols = st.columns(columns, gap="small")
        for col, row in zip(cols, rows[start:start + columns]):
            with col:
                _tile(workspace, run_id, row, key, selectable, int(row.image_id) in chosen)


def _tile(workspace: Workspace, run_id: int, row, key: str, selectable: bool, is_chosen: bool) -> None:
    image_id = int(row.image_id)
    show_image(workspace, row.sha256, row.path)
    st.text(caption(row.rel_path, getattr(row, "confidence", None), getattr(row, "verified", False),
                    getattr(row, "excluded", False), getattr(row, "new", False)))
    if selectable:
        box = f"{key}_pick_{image_id}"
        st.session_state[box] = is_chosen
        st.checkbox(f"Select image {image_id}", key=box, on_change=_toggle, args=(run_id, image_id, box),
                    label_visibility="collapsed")


def strip(workspace: Workspace, frame: pd.DataFrame, columns: int = 4, caption_rows: bool = False) -> None:
    """A row of small example thumbnails (no selection)."""
    if frame.empty:
        st.text("(no images)")
        return
    cols = st.columns(columns)
    for col, row in zip(cols, frame.head(columns).itertuples(index=False)):
        with col:
            show_image(workspace, row.sha256, row.path)
            if caption_rows:
                st.text(middle(row.rel_path, CAPTION_CHARS))
