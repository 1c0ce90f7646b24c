"""The vocabulary page's term table (search names and definitions, switch terms on and off), the active-term
counts, and the one-off encoding cost of the active terms for a chosen model (rates from
:mod:`tac_core.embedding.encoding_rate`)."""
from __future__ import annotations

import hashlib
import json

import pandas as pd
import streamlit as st

from tac_core.embedding.embed import cached_term_count
from tac_core.embedding.encoding_rate import measure_encoding_rate
from tac_core.inputs import vocab_spec
from tac_core.inputs.prompts import template_set
from tac_core.inputs.wordnet import WordNetNouns, normalize_term
from tac_core.run.history import text_encoding_rate
from ui import model_picker, widgets
from ui.safe_text import esc

MAX_ROWS = 300
SHOW = {"all": "all terms", "on": "switched on", "off": "switched off", "domain": "domain terms"}
MEASURE_TERMS = 32


@st.cache_resource(show_spinner="Loading WordNet …")
def wordnet() -> WordNetNouns:
    return WordNetNouns.load()


@st.cache_data(max_entries=6, show_spinner="Building the term list …")
def _base_frame(base_json: str) -> pd.DataFrame:
    """Every term of the spec before switching any off (WordNet filtered, packs, own terms)."""
    frame = vocab_spec.base_vocabulary(json.loads(base_json), wordnet()).to_frame()
    frame["key"] = [normalize_term(n) for n in frame["name"]]
    frame["search"] = (frame["name"] + " " + frame["gloss"] + " " + frame["note"]).str.casefold()
    return frame


def _base_json(spec: dict) -> str:
    return json.dumps({k: v for k, v in spec.items() if k not in ("disabled", "templates")}, sort_keys=True)


def _frame(spec: dict) -> pd.DataFrame:
    frame = _base_frame(_base_json(spec))
    return frame.assign(on=~frame["key"].isin(vocab_spec.switched_off(spec)))


def active_count(edit) -> list[str]:
    """Draw the counts; returns the active terms' names (for the encoding cost)."""
    frame = _frame(edit.spec)
    active = frame[frame["on"]]
    cols = st.columns(4)
    cols[0].metric("Active terms", f"{len(active):,}")
    cols[1].metric("WordNet terms", f"{int(active['sources'].str.contains('wordnet').sum()):,}")
    cols[2].metric("Domain terms", f"{int(active['sources'].str.contains('domain').sum()):,}")
    cols[3].metric("Switched off", f"{int((~frame['on']).sum()):,}")
    if active.empty:
        st.error("No term is active: switch some on, widen the WordNet filters or add domain terms. Runs need at "
                 "least one term.")
    return active["name"].tolist()


def browse_section(edit) -> None:
    st.subheader("Browse and switch terms off")
    cols = st.columns([3, 2])
    query = cols[0].text_input("Search terms (names and definitions)", key="vocab_search",
                               placeholder="e.g. crack, stain, animal")
    show = cols[1].selectbox("Show", list(SHOW), format_func=SHOW.get, key="vocab_show")
    frame = _frame(edit.spec)
    if query.strip():
        frame = frame[frame["search"].str.contains(query.strip().casefold(), regex=False)]
    if show == "on":
        frame = frame[frame["on"]]
    elif show == "off":
        frame = frame[~frame["on"]]
    elif show == "domain":
        frame = frame[frame["sources"].str.contains("domain")]
    st.caption(f"{len(frame):,} matching term(s)" + (f"; showing the first {MAX_ROWS} — refine the search to see the "
                                                     "others" if len(frame) > MAX_ROWS else ""))
    shown = frame.head(MAX_ROWS)[["on", "name", "sources", "category", "gloss", "synset", "note"]]
    shown = shown.rename(columns={"gloss": "definition"}).reset_index(drop=True)
    editor_key = edit.key(f"editor_{hashlib.sha1(f'{query.strip()}|{show}'.encode()).hexdigest()[:8]}")
    edited = st.data_editor(shown, key=editor_key, hide_index=True, width="stretch", num_rows="fixed",
                            disabled=True if edit.locked else [c for c in shown.columns if c != "on"],
                            column_config={"on": st.column_config.CheckboxColumn("on", help="Use this term")})
    changed = edited["on"] != shown["on"]
    if changed.any():
        turn_on = edited.loc[changed & edited["on"], "name"].tolist()
        turn_off = edited.loc[changed & ~edited["on"], "name"].tolist()

        def apply(spec):
            spec = vocab_spec.set_enabled(spec, turn_on, True) if turn_on else spec
            return vocab_spec.set_enabled(spec, turn_off, False) if turn_off else spec
        if edit.change(apply, "switch the terms"):
            widgets.flash("success", f"Switched {len(turn_off)} term(s) off and {len(turn_on)} on.")
        st.rerun()
    if query.strip() and len(frame):
        cols = st.columns(2)
        names = frame["name"].tolist()
        if cols[0].button(f"Switch off all {len(frame):,} matches", key="vocab_all_off", disabled=edit.locked):
            if edit.change(lambda s: vocab_spec.set_enabled(s, names, False), "switch the matches off"):
                widgets.flash("success", f"Switched {len(names):,} term(s) off.")
            st.rerun()
        if cols[1].button(f"Switch on all {len(frame):,} matches", key="vocab_all_on", disabled=edit.locked):
            if edit.change(lambda s: vocab_spec.set_enabled(s, names, True), "switch the matches on"):
                widgets.flash("success", f"Switched {len(names):,} term(s) on.")
            st.rerun()


def cost_section(edit, active: list[str]) -> None:
    st.subheader("Encoding cost")
    st.caption("Every active term is embedded once per model and template set, then cached in the workspace: later "
               "runs and other sets reuse it.")
    if edit.locked:  # the model inputs name files of the server: for those who may start runs only
        st.caption("Reviewers see the cost for a chosen model here.")
        return
    model = model_picker.model_inputs(edit.workspace, compact=True)
    if model is None or not active:
        return
    templates = edit.spec["templates"]
    ok, cached = widgets.attempt(lambda: cached_term_count(
        active, model_picker.spec_of(model), templates, edit.workspace.cache_dir), "read the embedding cache")
    if not ok:
        return
    missing = len(dict.fromkeys(active)) - cached
    device = st.session_state.get("pref_device", "auto")
    rate = (st.session_state.get("vocab_measured", {}).get(_rate_key(model, templates, device))
            or text_encoding_rate(edit.workspace, model, templates, device))
    st.metric("Terms still to encode", f"{missing:,}", help=f"{cached:,} of the active terms are cached already.")
    if missing == 0:
        st.success("Every active term is already encoded for this model: runs skip this step.")
        return
    seconds = rate.seconds(missing, templates)
    st.markdown(f"About **{_duration(seconds)}** once ({missing:,} terms × {len(template_set(templates))} prompts at "
                f"~{rate.prompts_per_second:,.0f} prompts/s, {esc(rate.source)}).")
    if seconds > 1800:
        st.warning("That is long. The full WordNet with the paper's 7 prompts takes about an hour on a 2-core CPU with "
                   "ViT-B-32 (about 150 prompts/s) and seconds to minutes on a GPU. To cut it: choose tac3 or photo1 "
                   "templates, keep only some WordNet categories (e.g. noun.artifact, noun.state), or run on a GPU.")
    if st.button("Measure encoding speed", help="Loads the model here and encodes 32 terms to time it.",
                 disabled=edit.locked):
        with st.spinner("Measuring …"):
            ok, measured = widgets.attempt(lambda: measure_encoding_rate(
                model_picker.spec_of(model), templates, device, active[:MEASURE_TERMS]), "measure the encoding speed")
        if ok:
            st.session_state.setdefault("vocab_measured", {})[_rate_key(model, templates, device)] = measured
            st.rerun()


def _rate_key(model: dict, templates: str, device: str) -> str:
    return json.dumps([model, templates, device], sort_keys=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
