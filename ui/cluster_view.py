"""Cluster page: choose model, device, vocabulary set, K, mode and seed; start a run as a job; watch, cancel,
re-run; pick the run to review. Progress and the runs list live in :mod:`ui.run_monitor`."""
from __future__ import annotations

import streamlit as st

from tac_core.run import jobs
from tac_core.run.history import latest_k_suggestion
from tac_core.run.params import RunParams
from tac_core.inputs import vocab_spec
from ui import access, model_picker, ray_setting, run_monitor, state, vocab_terms, widgets
from ui.run_choices import BALANCE_LABELS, LAYOUT_LABELS, MODE_LABELS
from ui.safe_text import esc


def render() -> None:
    workspace = state.require_workspace()
    widgets.sidebar_status(workspace)
    st.title("Cluster")
    st.caption(f"Workspace: {esc(workspace.name)}")
    widgets.show_flashes()
    active = run_monitor.active_ids(workspace)
    if active:
        st.info(f"Run {', '.join(map(str, active))} {'is' if len(active) == 1 else 'are'} running: progress is shown "
                "below the Start run button.")
    _new_run(workspace)
    run_monitor.active_runs(workspace)
    st.divider()
    run_monitor.runs_section(workspace)


def _new_run(workspace) -> None:
    st.subheader("New run")
    if not access.notice(workspace, "run"):
        return
    n_images = workspace.image_counts()["ok"]
    if n_images < 2:
        st.warning("Clustering needs at least 2 usable images; add images first.")
        widgets.page_link("pages/images.py")
        return
    st.markdown("**Model**")
    model = model_picker.model_inputs(workspace)
    device = model_picker.device_input()
    set_name, spec = _vocabulary_input(workspace, model, device)
    k = _k_input(workspace, n_images)
    cols = st.columns(2)
    mode = cols[0].radio("Mode", list(MODE_LABELS), format_func=MODE_LABELS.get, key="cluster_mode")
    seed = cols[1].number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="cluster_seed",
                                help="The same seed gives the same result on the same device.")
    with st.expander("More options"):
        epochs = st.number_input("Training epochs (trained mode)", min_value=1, max_value=500, value=20,
                                 key="cluster_epochs")
        batch = st.number_input("Image batch size", min_value=1, max_value=1024, value=64, key="cluster_batch",
                                help="Images embedded at once; lower it if the GPU runs out of memory.")
        suggest = st.checkbox("Suggest K after clustering", value=True, key="cluster_suggest",
                              help="Sweeps K from 2 to min(30, images/5) on TAC's features; adds a few seconds to "
                                   "a minute or two on the CPU.")
        layout = st.radio("Map layout", list(LAYOUT_LABELS), format_func=LAYOUT_LABELS.get, key="cluster_layout")
        balance = st.radio("Cluster sizes", list(BALANCE_LABELS), format_func=BALANCE_LABELS.get,
                           key="cluster_balance",
                           help="Plant sets are rarely balanced: most photos show good parts or one common defect. "
                                "'From the data' keeps such a class whole and rare defects apart; 'equal' is the "
                                "published TAC setting, for reproducing the paper on balanced benchmarks.")
        ray_setting.ray_address_input(workspace)
    st.caption(f"The run uses all {n_images:,} usable images. Embeddings are cached in the workspace, so a second "
               "run with the same model only pays for the clustering.")
    if st.button("Start run", type="primary"):
        if model is None or spec is None:
            st.error("Fix the problems above first.")
            return
        ok, run_id = widgets.attempt(lambda: jobs.start_run(workspace, RunParams(
            model=model, vocab_set=set_name, vocab_spec=spec, n_clusters=int(k), mode=mode, seed=int(seed),
            device=device, epochs=int(epochs), batch_size=int(batch), projection=layout, suggest_k=suggest,
            balance=balance)),
            "start the run")
        if ok:
            run_monitor.select(run_id)
            widgets.flash("success", f"Started run {run_id}.")
            st.rerun()


def _vocabulary_input(workspace, model: dict | None, device: str) -> tuple[str, dict | None]:
    ok, default = widgets.attempt(lambda: vocab_spec.ensure_default_set(workspace), "read the vocabulary sets")
    if not ok:
        return "", None
    names = workspace.vocab_sets()["name"].tolist()
    preferred = st.session_state.get("vocab_set_name", default)
    index = names.index(preferred) if preferred in names else names.index(default)
    name = st.selectbox("Vocabulary set", names, index=index, key="cluster_vocab_set",
                        help="Edit sets on the Vocabulary page; the run keeps a copy of the set as it is now.")
    ok, spec = widgets.attempt(lambda: vocab_spec.load_spec(workspace, name), "read the vocabulary set")
    if not ok:
        return name, None
    st.caption(esc(vocab_spec.spec_summary(spec)))
    if model is not None:
        ok, est = widgets.attempt(lambda: vocab_terms.estimate(workspace, spec, model, device),
                                  "estimate the vocabulary's encoding time")
        if ok:
            st.markdown(f"Vocabulary: {vocab_terms.estimate_text(est)}")
    vocab_terms.setting_section(workspace, spec, lambda: widgets.attempt(lambda: vocab_spec.change_set(
        workspace, name, vocab_spec.paper_setting), "switch to the paper's setting")[0], key="cluster_paper_setting")
    return name, spec


def _k_input(workspace, n_images: int) -> int:
    suggestion = latest_k_suggestion(workspace)
    st.session_state.setdefault("pref_k", min(8, n_images))
    st.session_state["pref_k"] = max(2, min(int(st.session_state["pref_k"]), n_images))
    st.session_state["w_k"] = st.session_state["pref_k"]
    cols = st.columns([2, 3])
    k = cols[0].number_input("Number of clusters (K)", min_value=2, max_value=max(2, n_images), step=1, key="w_k",
                             on_change=lambda: st.session_state.__setitem__("pref_k", st.session_state["w_k"]),
                             help=f"Between 2 and the number of usable images ({n_images:,}). Groups can be merged "
                                  "and split later on the Review page.")
    with cols[1]:
        if suggestion is None:
            st.caption("No K suggestion yet: the first run computes one (keep 'Suggest K after clustering' on), "
                       "then start a second run with it; embeddings are reused, so it is quick.")
        else:
            run_id, data = suggestion
            st.caption(f"Suggested by run {run_id}: {esc(data['explanation'])}")
            if st.button(f"Use K = {data['best_k']}", key="use_suggested_k"):
                st.session_state["pref_k"] = int(data["best_k"])
                st.rerun()
    return int(k)
