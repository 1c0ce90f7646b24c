"""Export page: the reviewed labels of a run as CSV (all images, or verified only; optionally only approved
clusters), previewed, downloaded, and kept in the workspace's ``exports/`` folder with a manifest saying what the
file holds and who approved which cluster; or as a bundle for a training pipeline (:mod:`ui.bundle_view`)."""
from __future__ import annotations

import io
import tempfile

import pandas as pd
import streamlit as st

from tac_core.workspace.export import export_labels, list_exports
from tac_core.workspace.review import ReviewSession
from ui import bundle_view, state, widgets
from ui.safe_text import esc

PREVIEW_ROWS = 100
ROW_CHOICES = {"all": "All images (except excluded ones)",
               "verified": "Verified only (images verified themselves or through a verified cluster)"}
_LAST = "export_last"


def render() -> None:
    workspace = state.require_workspace()
    widgets.sidebar_status(workspace)
    st.title("Export")
    st.caption(f"Workspace: {esc(workspace.name)}")
    widgets.show_flashes()
    runs = workspace.runs()
    done = runs[runs["status"] == "done"]
    if done.empty:
        st.info("No finished run yet: start one on the Cluster page, review it, then export its labels here.")
        widgets.page_link("pages/cluster.py")
        return
    ids = [int(i) for i in done["id"]]
    current = state.current_run_id(workspace)
    by_id = done.set_index("id")
    run_id = st.selectbox("Run", ids, index=ids.index(current) if current in ids else 0, key="export_run",
                          format_func=lambda i: _run_label(i, by_id.loc[i]))
    if run_id != current:
        state.set_run(run_id)
    rows = st.radio("Rows", list(ROW_CHOICES), format_func=ROW_CHOICES.get, key="export_rows")
    ok, session = widgets.attempt(lambda: _session(workspace, run_id), "open the run's review")
    if not ok:
        return
    approved = session.state.sign_offs.approved
    approved_only = st.checkbox(f"Approved clusters only ({len(approved)} of {len(session.state.names)} approved)",
                                key="export_approved_only", help="Only the images of clusters an approver signed off "
                                                                 "(Review page); the manifest lists every approval.")
    choice = (rows == "verified", approved_only)
    _preview(workspace, session, run_id, *choice)
    if st.button("Create export", type="primary"):
        ok, result = widgets.attempt(lambda: export_labels(session, workspace, run_id, verified_only=choice[0],
                                                           approved_only=approved_only), "export the labels")
        if ok:
            st.session_state[_LAST] = {"run_id": run_id, "choice": choice, "name": result.csv_path.name,
                                       "path": str(result.csv_path), "rows": result.n_rows,
                                       "manifest": result.manifest, "csv": result.csv_bytes}
    _last_export(run_id, choice)
    st.divider()
    bundle_view.render(session, *choice)
    _earlier_exports(workspace)
    st.divider()
    widgets.page_link("pages/review.py")


def _run_label(run_id: int, run) -> str:
    params = run["params"]
    return (f"Run {run_id} · K = {params.get('n_clusters')} · {params.get('mode')} · "
            f"{str(run['finished'] or '')[:16].replace('T', ' ')}")


def _session(workspace, run_id: int) -> ReviewSession:
    """One review session per browser session and run, refreshed with edits made since (any session)."""
    sessions = st.session_state.setdefault("export_sessions", {})
    key = (str(workspace.path), run_id)
    if key not in sessions:
        sessions[key] = ReviewSession(workspace, run_id)
    sessions[key].refresh()
    return sessions[key]


def _preview(workspace, session: ReviewSession, run_id: int, verified_only: bool, approved_only: bool) -> None:
    key = (str(workspace.path), run_id, verified_only, approved_only, len(session.history()))  # the log changes
    cache = st.session_state.setdefault("export_previews", {})
    if key not in cache:
        with tempfile.TemporaryDirectory() as folder:
            ok, result = widgets.attempt(lambda: export_labels(session, workspace, run_id, verified_only=verified_only,
                                                               dest_dir=folder, record=False,
                                                               approved_only=approved_only), "preview the export")
        if not ok:
            return
        cache.clear()
        cache[key] = result
    result = cache[key]
    counts = result.manifest["counts"]
    cols = st.columns(4)
    cols[0].metric("Rows", f"{counts['rows']:,}")
    cols[1].metric("Clusters", f"{counts['clusters']:,}")
    cols[2].metric("Verified rows", f"{counts['verified']:,}")
    cols[3].metric("Excluded images", f"{counts['excluded']:,}")
    if counts["rows"] == 0:
        why = ": nothing is verified yet. Verify images or clusters on the Review page." if verified_only else \
            ": no cluster is approved yet. An approver approves clusters on the Review page." if approved_only else "."
        st.warning("Nothing to export with this choice" + why)
        return
    frame = pd.read_csv(io.BytesIO(result.csv_bytes), encoding="utf-8-sig", dtype=str, keep_default_na=False,
                        nrows=PREVIEW_ROWS)
    st.caption(f"Preview: the first {min(PREVIEW_ROWS, counts['rows'])} of {counts['rows']:,} rows. Cells a spreadsheet "
               "would run as a formula start with ' so they stay text.")
    st.dataframe(frame, hide_index=True, width="stretch")


def _last_export(run_id: int, choice: tuple[bool, bool]) -> None:
    last = st.session_state.get(_LAST)
    if not last or last["run_id"] != run_id or last["choice"] != choice:
        return
    st.success(f"Exported {last['rows']:,} rows. A copy is kept in the workspace:")
    st.code(last["path"], language=None)
    st.download_button("Download CSV", last["csv"], file_name=last["name"], mime="text/csv", type="primary",
                       on_click="ignore")
    with st.expander("Manifest"):
        st.json(last["manifest"], expanded=True)


def _earlier_exports(workspace) -> None:
    manifests = list_exports(workspace)
    if not manifests:
        return
    rows = [{"file": manifest.get("csv_file", ""), "run": manifest.get("run_id"),
             "verified only": manifest.get("verified_only"), "rows": manifest.get("counts", {}).get("rows"),
             "created": str(manifest.get("created", ""))[:19].replace("T", " ")} for manifest in manifests]
    with st.expander(f"Earlier exports in this workspace ({len(rows)})"):
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        st.caption(f"Folder: {esc(workspace.exports_dir)}")
