"""Thumbnail galleries: a paged grid of images, each with a checkbox that adds it to / removes it from the
selection, and small strips of example thumbnails.

Checkbox state is derived from the selection every rerun (it is set in session state just before the
checkbox is drawn), so the map, the gallery and the buttons always agree on what is selected. File names are
drawn with ``st.text``: user text is never rendered as Markdown.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from tac_core.workspace.workspace import Workspace
from ui.map_view import selected_ids, set_selection
from ui.review_data import image_source

PAGE_SIZE = 24
COLUMNS = 6


def page_of(frame: pd.DataFrame, key: str, page_size: int = PAGE_SIZE) -> pd.DataFrame:
    """The rows of the current page; draws a "Page" pager under the caller's control when there are several."""
    pages = max(1, math.ceil(len(frame) / page_size))
    if st.session_state.get(key, 1) > pages:
        st.session_state.pop(key, None)  # back to page 1 (setting it would clash with the widget's default)
    page = st.pagination(pages, key=key, max_visible_pages=7) if pages > 1 else 1
    return frame.iloc[(page - 1) * page_size: page * page_size]


def _toggle(run_id: int, image_id: int, key: str) -> None:
    ids = selected_ids(run_id)
    if st.session_state.get(key):
        set_selection(run_id, np.union1d(ids, [image_id]))
    else:
        set_selection(run_id, np.setdiff1d(ids, [image_id]))


def grid(workspace: Workspace, run_id: int, frame: pd.DataFrame, key: str, columns: int = COLUMNS,
         selectable: bool = True) -> None:
    """Thumbnails of ``frame`` rows (image_id, sha256, path, rel_path, confidence, verified, excluded)."""
    if frame.empty:
        st.text("No images here.")
        return
    chosen = set(selected_ids(run_id).tolist()) if selectable else set()
    rows = list(frame.itertuples(index=False))
    for start in range(0, len(rows), columns):
        cols = st.columns(columns)
        for col, row in zip(cols, rows[start:start + columns]):
            with col:
                _tile(workspace, run_id, row, key, selectable, int(row.image_id) in chosen)


def _tile(workspace: Workspace, run_id: int, row, key: str, selectable: bool, is_chosen: bool) -> None:
    image_id = int(row.image_id)
    source = image_source(workspace, row.sha256, row.path)
    if source is None:
        st.text("(no thumbnail)")
    else:
        st.image(source, width="stretch")
    flags = []
    if getattr(row, "verified", False):
        flags.append("verified")
    if getattr(row, "excluded", False):
        flags.append("excluded")
    if getattr(row, "new", False):
        flags.append("new")
    confidence = getattr(row, "confidence", None)
    detail = f"{confidence:.2f}" if confidence is not None and not pd.isna(confidence) else ""
    st.text(f"{row.rel_path}\n{' · '.join([detail, *flags]).strip(' ·')}")
    if selectable:
        box = f"{key}_pick_{image_id}"
        st.session_state[box] = is_chosen
        st.checkbox(f"Select image {image_id}", key=box, on_change=_toggle, args=(run_id, image_id, box))


def strip(workspace: Workspace, frame: pd.DataFrame, columns: int = 4, caption_rows: bool = False) -> None:
    """A row of small example thumbnails (no selection)."""
    if frame.empty:
        st.text("(no images)")
        return
    cols = st.columns(columns)
    for col, row in zip(cols, frame.head(columns).itertuples(index=False)):
        with col:
            source = image_source(workspace, row.sha256, row.path)
            if source is None:
                st.text("(no thumbnail)")
            else:
                st.image(source, width="stretch")
            if caption_rows:
                st.text(str(row.rel_path))

