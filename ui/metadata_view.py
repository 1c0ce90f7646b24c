"""The Images page's metadata section: fields read from paths with a pattern (previewed before it is applied),
joined from a CSV, listed per image, and removed. What is parsed, checked and stored is the engine's
(:mod:`tac_core.workspace.metadata`); a refused pattern or CSV shows the engine's message and changes nothing."""
from __future__ import annotations

import streamlit as st

from tac_core.workspace import metadata
from ui import widgets
from ui.safe_text import esc

PATTERN = "metadata_pattern"
PREVIEWED = "metadata_previewed"  # the pattern text whose preview is shown
CSV_ROUND = "metadata_csv_round"  # bumped after a join so the uploader starts empty
TABLE_ROWS = 1000


def section(workspace) -> None:
    st.subheader("Metadata")
    st.caption("Where each image comes from (line, camera, shift, date, part…): read it from the folder and file "
               "names with a pattern, or join a CSV. The Review page colours and filters the map by it and flags "
               "clusters that come mostly from one line or camera; exports carry it as columns.")
    paths, table = st.tabs(["From paths", "From a CSV"])
    with paths:
        _pattern(workspace)
    with table:
        _csv(workspace)
    _fields(workspace)


def _pattern(workspace) -> None:
    st.text_input("Path pattern", key=PATTERN, placeholder="{line}/{camera}/{date}_{serial}.png",
                  help="{name} is a field (one folder or file-name part), * is text to skip; the pattern matches the "
                       "end of each image's path. Images added later get their fields from the last pattern applied.")
    text = st.session_state.get(PATTERN, "")
    left, right = st.columns(2)
    if left.button("Preview", key="metadata_preview", disabled=not text.strip(), width="stretch"):
        st.session_state[PREVIEWED] = text
    previewed = st.session_state.get(PREVIEWED)
    if previewed is None or previewed != text:
        right.button("Apply to all images", key="metadata_apply", disabled=True, width="stretch",
                     help="Preview the pattern first.")
        return
    ok, preview = widgets.attempt(lambda: metadata.preview_pattern(workspace, text), "preview the pattern")
    if not ok:
        return
    if right.button("Apply to all images", key="metadata_apply", type="primary", width="stretch",
                    disabled=preview.matched == 0):
        done, result = widgets.attempt(lambda: metadata.apply_pattern(workspace, text), "apply the pattern")
        if done:
            st.session_state.pop(PREVIEWED, None)
            widgets.flash("success", f"Stored {result.summary()}.")
            st.rerun()
    (st.info if preview.matched else st.warning)(
        esc(f"The pattern fits {preview.matched:,} of {preview.total:,} images. A few paths and what it reads:"))
    st.dataframe(preview.rows, hide_index=True, width="stretch", key="metadata_preview_rows")


def _csv(workspace) -> None:
    round_ = st.session_state.get(CSV_ROUND, 0)
    upload = st.file_uploader("CSV with a relative_path or file_name column", type=["csv", "txt"],
                              key=f"metadata_csv_{round_}",
                              help="Other columns become fields. relative_path is the path the Images page lists; a "
                                   "source column (the source id) tells apart paths that two sources share.")
    if st.button("Join CSV", key="metadata_join", disabled=upload is None):
        done, result = widgets.attempt(lambda: metadata.join_csv(workspace, upload.name, upload.getvalue()),
                                       "join the CSV")
        if done:
            st.session_state[CSV_ROUND] = round_ + 1
            widgets.flash("success", f"Stored {result.summary()}.")
            st.rerun()


def _fields(workspace) -> None:
    fields = metadata.metadata_fields(workspace)
    if fields.empty:
        st.caption("No metadata yet.")
        return
    st.markdown("**Fields**")
    st.dataframe(fields.rename(columns={"field": "Field", "images": "Images", "values": "Distinct values"}),
                 hide_index=True, key="metadata_fields")
    pick, button = st.columns([3, 1], vertical_alignment="bottom")
    field = pick.selectbox("Field", fields["field"].tolist(), key="metadata_remove_field")
    if button.button("Remove field", key="metadata_remove", width="stretch"):
        removed = metadata.remove_field(workspace, field)
        widgets.flash("success", f"Removed {removed:,} value(s) of {field}.")
        st.rerun()
    images = workspace.images().set_index("id")
    table = metadata.metadata_table(workspace)
    table.insert(0, "relative_path", images.loc[table.index, "rel_path"].to_numpy())
    st.markdown(f"**Images with metadata** ({len(table):,})")
    if len(table) > TABLE_ROWS:
        st.caption(f"Showing the first {TABLE_ROWS:,}.")
    st.dataframe(table.head(TABLE_ROWS), hide_index=True, width="stretch", key="metadata_table")
