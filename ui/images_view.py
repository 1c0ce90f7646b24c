"""Images page: add images (uploaded folder, uploaded files or .zip, a folder on this machine) and see what is in
the workspace: counts, a sample of thumbnails, where images came from, every skipped file with its reason, and
the images' metadata (``ui.metadata_view``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from tac_core.workspace import ingest
from tac_core.workspace.export import skipped_files, skipped_files_csv
from ui import access, metadata_view, state, widgets
from ui.safe_text import esc

SAMPLE_SIZE = 24
TABLE_ROWS = 1000
_UPLOAD_ROUND = "images_upload_round"  # bumped after an add so the uploaders start empty
_LAST_REPORT = "images_last_report"


def render() -> None:
    workspace = state.require_workspace()
    widgets.sidebar_status(workspace)
    st.title("Images")
    st.caption(f"Workspace: {esc(workspace.name)}")
    widgets.show_flashes()
    if access.notice(workspace, "add_images"):
        _add_section(workspace)
    _last_report()
    _overview(workspace)
    if workspace.image_counts()["total"]:
        st.divider()
        metadata_view.section(workspace)
    st.divider()
    widgets.page_link("pages/vocabulary.py")


def _add_section(workspace) -> None:
    st.subheader("Add images")
    st.caption("Photos keep their sub-folder names. The same picture added twice (same bytes) is used once and "
               "listed as a duplicate. Thumbnails are made once, now.")
    round_ = st.session_state.get(_UPLOAD_ROUND, 0)
    tabs = st.tabs(["Upload a folder", "Upload files or a .zip", "Folder on this machine"])
    with tabs[0]:
        files = st.file_uploader("Choose a folder of images", accept_multiple_files="directory",
                                 key=f"upload_folder_{round_}")
        if st.button("Add uploaded folder"):
            _add(workspace, lambda progress: ingest.add_uploads(workspace, files, folder_upload=True,
                                                                progress=progress), "add the uploaded folder")
    with tabs[1]:
        files = st.file_uploader("Choose image files or .zip archives", accept_multiple_files=True,
                                 key=f"upload_files_{round_}")
        if st.button("Add uploaded files"):
            _add(workspace, lambda progress: ingest.add_uploads(workspace, files, progress=progress),
                 "add the uploaded files")
    with tabs[2]:
        refused = access.why_not(workspace, "add_server_folder")
        st.caption(esc(refused) if refused else f"A folder on the machine running TAC Studio; the images stay where "
                                                f"they are. {esc(ingest.describe_roots())}")
        path = st.text_input("Folder path", key="images_folder_path", placeholder="/data/line3/photos",
                             disabled=bool(refused))
        recursive = st.checkbox("Include sub-folders", value=True, key="images_recursive", disabled=bool(refused))
        if st.button("Add folder", disabled=bool(refused), help=access.help_text(refused)):
            _add(workspace, lambda progress: ingest.add_folder(workspace, path, recursive=recursive,
                                                               progress=progress), "add the folder")


def _add(workspace, action, doing: str) -> None:
    bar = widgets.ProgressBar()
    ok, report = widgets.attempt(lambda: action(bar), doing)
    bar.clear()
    if not ok:
        return
    st.session_state[_LAST_REPORT] = {
        "summary": report.summary(), "location": report.location, "kind": report.kind, "added": report.added,
        "not_added": [list(row) for row in report.not_added]}
    st.session_state[_UPLOAD_ROUND] = st.session_state.get(_UPLOAD_ROUND, 0) + 1
    st.rerun()


def _last_report() -> None:
    report = st.session_state.get(_LAST_REPORT)
    if not report:
        return
    text = f"Added from {report['location']}: {report['summary']}."
    (st.success if report["added"] else st.warning)(esc(text))
    if report["not_added"]:
        with st.expander(f"Not added from this source ({len(report['not_added'])})", expanded=report["added"] == 0):
            frame = pd.DataFrame(report["not_added"], columns=["file", "status", "reason"])
            st.dataframe(frame.head(TABLE_ROWS), hide_index=True, width="stretch")


def _overview(workspace) -> None:
    counts = workspace.image_counts()
    st.subheader("In this workspace")
    cols = st.columns(4)
    cols[0].metric("Usable images", f"{counts['ok']:,}")
    cols[1].metric("Duplicates", f"{counts['duplicate']:,}")
    cols[2].metric("Skipped", f"{counts['skipped']:,}")
    sources = pd.DataFrame(list(ingest.iter_sources(workspace)))
    cols[3].metric("Sources", len(sources))
    if counts["total"] == 0:
        st.info("No images yet: add a folder, files or a .zip above.")
        return
    ok = workspace.images("ok")
    if len(ok):
        st.markdown("**Sample**")
        picks = ok.iloc[np.unique(np.linspace(0, len(ok) - 1, min(SAMPLE_SIZE, len(ok))).astype(int))]
        missing = [(p, s) for p, s in zip(picks["path"], picks["sha256"])]
        ingest.make_thumbnails(workspace, missing)  # only makes the ones that are missing (e.g. older adds)
        widgets.thumbnail_grid(workspace.thumbs_dir, list(zip(picks["sha256"], picks["rel_path"])))
    st.markdown("**Sources**")
    st.dataframe(sources.rename(columns={"ok": "usable"}), hide_index=True, width="stretch")
    table = skipped_files(workspace)
    st.markdown(f"**Skipped files and duplicates** ({len(table):,})")
    if table.empty:
        st.caption("Every file was usable.")
        return
    if len(table) > TABLE_ROWS:
        st.caption(f"Showing the first {TABLE_ROWS:,} of {len(table):,}; download the full list below.")
    st.dataframe(table.head(TABLE_ROWS), hide_index=True, width="stretch")
    st.download_button("Download the skipped list (CSV)", skipped_files_csv(table),
                       file_name="skipped_files.csv", mime="text/csv", on_click="ignore")
