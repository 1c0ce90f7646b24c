"""Runs on the cluster page: live progress of running jobs (refreshed every second), the runs list, one run's
details (stages, errors in plain words, K suggestion, parameters) and its actions (cancel, run again, review)."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from tac_core.run import jobs
from tac_core.run import params as run_params
from ui import access, state, widgets
from ui.safe_text import esc

SELECTED_KEY = "cluster_selected_run"
_PICK_PENDING = "cluster_pick_pending"
_CANCELLED_AT = "cluster_cancel_requested"
FORCE_AFTER_S = 15
ACTIVE = ("pending", "running")
STATUS_TEXT = {"pending": "waiting to start", "running": "running", "done": "done", "failed": "failed",
               "cancelled": "cancelled", "interrupted": "interrupted (its process stopped)"}


def active_ids(workspace) -> tuple[int, ...]:
    runs = workspace.runs()
    return tuple(int(i) for i in runs.loc[runs["status"].isin(ACTIVE), "id"])


def select(run_id: int) -> None:
    """Show this run's details on the next run of the page (e.g. the run just started)."""
    st.session_state[SELECTED_KEY] = run_id
    st.session_state[_PICK_PENDING] = run_id


def active_runs(workspace) -> None:
    active = active_ids(workspace)
    if active:
        st.subheader("Running")
        _live(workspace, active)


@st.fragment(run_every=1)
def _live(workspace, watched: tuple[int, ...]) -> None:
    runs = workspace.runs().set_index("id")
    active = tuple(int(i) for i in runs.index[runs["status"].isin(ACTIVE)])
    if active != watched:
        st.rerun()  # a run ended or started: redraw the whole page (list, buttons)
    for run_id in active:
        run = runs.loc[run_id]
        params = run["params"]
        st.markdown(f"**Run {run_id}** · K = {params['n_clusters']} · {params['mode']} · "
                    f"{STATUS_TEXT[run['status']]}")
        widgets.stage_bars(run_params.STAGES[params["mode"]], jobs.read_stages(workspace, run_id), run["status"])
        _cancel_buttons(workspace, run_id, "live")


def _cancel_buttons(workspace, run_id: int, where: str) -> None:
    requested = st.session_state.get(_CANCELLED_AT, {}).get(run_id)
    refused = access.why_not(workspace, "run")
    cols = st.columns(4)
    if cols[0].button("Cancel run", key=f"cancel_{where}_{run_id}", disabled=requested is not None or bool(refused),
                      help=access.help_text(refused)):
        ok, outcome = widgets.attempt(lambda: jobs.cancel_run(workspace, run_id), "cancel the run")
        if ok:
            st.session_state.setdefault(_CANCELLED_AT, {})[run_id] = time.time()
            widgets.flash("info", f"Run {run_id}: {'stopping at the next batch' if outcome == 'stopping' else outcome}.")
            st.rerun()
    if requested is not None:
        waited = time.time() - requested
        cols[1].caption(f"Stopping … ({waited:.0f} s)")
        if waited > FORCE_AFTER_S and cols[2].button("Force stop", key=f"force_{where}_{run_id}",
                                                     help="Kills the job at once; finished embeddings stay cached."):
            widgets.attempt(lambda: jobs.cancel_run(workspace, run_id, force=True), "stop the run")
            st.rerun()


def runs_section(workspace) -> None:
    st.subheader("Runs")
    runs = workspace.runs()
    if runs.empty:
        st.info("No runs yet: start one above.")
        return
    st.dataframe(_table(runs), hide_index=True, width="stretch")
    ids = [int(i) for i in runs["id"]]
    if st.session_state.get(_PICK_PENDING) in ids:
        st.session_state["cluster_run_pick"] = st.session_state.pop(_PICK_PENDING)  # before the widget exists
    selected = st.session_state.get(SELECTED_KEY)
    index = ids.index(selected) if selected in ids else 0
    by_id = runs.set_index("id")
    run_id = st.selectbox("Run", ids, index=index, key="cluster_run_pick",
                          format_func=lambda i: _run_label(i, by_id.loc[i, "params"]))
    st.session_state[SELECTED_KEY] = run_id
    _details(workspace, run_id, workspace.run(run_id))


def _run_label(run_id: int, params: dict) -> str:
    """A select option: fixed for the run's life (Streamlit keeps an option's first label while it is shown)."""
    return f"Run {run_id} · K = {params.get('n_clusters')} · {params.get('mode')} · {params.get('vocab_set', '')}"[:90]


def _table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for run in runs.itertuples(index=False):
        params = run.params
        model = params.get("model", {})
        rows.append({"run": run.id, "status": run.status, "K": params.get("n_clusters"), "mode": params.get("mode"),
                     "model": model.get("name", "") if not model.get("checkpoint") else
                     f"{model.get('name')} + {model.get('checkpoint')}",
                     "vocabulary set": params.get("vocab_set", ""), "images": run.n_images,
                     "clusters": "" if pd.isna(run.n_clusters) else int(run.n_clusters),
                     "stage": run.stage if run.status in ACTIVE else "",
                     "created": str(run.created)[:19].replace("T", " "),
                     "finished": str(run.finished or "")[:19].replace("T", " "), "error": run.error or ""})
    return pd.DataFrame(rows)


def _details(workspace, run_id: int, run: dict) -> None:
    status, params = run["status"], run["params"]
    if status == "interrupted" and run_id in st.session_state.get(_CANCELLED_AT, {}):
        # the job died of the cancel itself (e.g. SIGTERM before its handler was set): that is a cancel
        ok, _ = widgets.attempt(lambda: jobs.cancel_run(workspace, run_id), "cancel the run")
        if ok:
            run = workspace.run(run_id)
            status = run["status"]
    st.markdown(f"**Run {run_id}: {STATUS_TEXT[status]}**")
    if status == "failed":
        st.error(f"This run failed: {esc(run['error'])}")
    elif status == "interrupted":
        st.warning("This run's process stopped before it finished (the server or the machine restarted, or the "
                   "job was killed). Run it again: finished embeddings are reused.")
    elif status == "cancelled":
        st.info(f"Cancelled: {esc(run['error'] or 'by the user')}")
    cols = st.columns(4)
    if status == "done":
        current = state.current_run_id(workspace)
        if current == run_id:
            cols[0].caption("This is the run being reviewed.")
        if cols[1].button("Review this run", type="primary", key=f"review_{run_id}"):
            state.set_run(run_id)
            widgets.switch_page("pages/review.py")
        if cols[2].button("Export this run", key=f"export_{run_id}"):
            state.set_run(run_id)
            widgets.switch_page("pages/export.py")
    elif status in ("interrupted", "failed", "cancelled"):
        refused = access.why_not(workspace, "run")
        if cols[0].button("Run again", type="primary", key=f"rerun_{run_id}", disabled=bool(refused),
                          help=access.help_text(refused)):
            ok, _ = widgets.attempt(lambda: jobs.rerun(workspace, run_id), "run it again")
            if ok:
                st.session_state.get(_CANCELLED_AT, {}).pop(run_id, None)
                widgets.flash("success", f"Run {run_id} started again.")
                st.rerun()
    elif status in ACTIVE:
        cols[0].caption("Progress and the Cancel run button are under Start run above.")
    with st.expander("Stages", expanded=status != "done"):
        widgets.stage_bars(run_params.STAGES.get(params.get("mode"), ()), jobs.read_stages(workspace, run_id), status)
    summary = jobs.read_summary(workspace, run_id)
    if summary:
        _summary(summary)
    with st.expander("Parameters"):
        st.json(params, expanded=False)
    log = jobs.log_tail(workspace, run_id)
    if log:
        with st.expander("Job log (last lines)"):
            st.code(log, language=None)


def _summary(summary: dict) -> None:
    precision = summary.get("image_precision")
    st.caption(f"{summary.get('n_images', 0):,} images clustered on {summary.get('device', '?')}"
               f"{f' (new image embeddings in {precision})' if precision else ''}; "
               f"{summary.get('n_vocabulary', 0):,} vocabulary terms, {len(summary.get('selected_terms', []))} kept "
               f"by TAC's noun filter; {summary.get('n_semantic_centers', 0)} semantic centres.")
    failed = summary.get("failed_images") or []
    if failed:
        with st.expander(f"Images that could not be embedded ({len(failed)})"):
            st.dataframe(pd.DataFrame(failed), hide_index=True, width="stretch")
    suggestion = summary.get("k_suggestion")
    if suggestion:
        with st.expander(f"K suggestion: {suggestion['best_k']}"):
            st.markdown(esc(suggestion["explanation"]))
            st.caption(f"Rule: the K with the highest silhouette among those whose stability is at least "
                       f"{suggestion['stability_threshold']:.2f} (ties within 0.01 go to the smaller K); otherwise the "
                       f"highest silhouette. Computed on {suggestion['n_points_used']:,} images' TAC features "
                       "[image, text counterpart].")
            st.dataframe(pd.DataFrame(suggestion["rows"]).round(3), hide_index=True, width="stretch")
    seconds = summary.get("seconds") or {}
    if seconds:
        st.caption("Seconds per step: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
