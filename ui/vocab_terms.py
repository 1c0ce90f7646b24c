"""The vocabulary page's term table (search names and definitions, switch terms on and off), the active-term
counts, the one-off encoding cost of the active terms for a chosen model (:func:`tac_core.embedding.embed.
vocabulary_estimate`), and which setting a set is with one click to the paper's full one (also on the Cluster
page)."""
from __future__ import annotations

import hashlib
import json

import pandas as pd
import streamlit as st

from tac_core.embedding.embed import VocabularyEstimate, model_cache_dir, vocabulary_estimate
from tac_core.embedding.encoding_rate import measure_encoding_rate, planned_precision
from tac_core.inputs import vocab_spec
from tac_core.inputs.wordnet import WordNetNouns, normalize_term
from ui import model_picker, widgets
from ui.safe_text import esc

MAX_ROWS = 300
SHOW = {"all": "all terms", "on": "switched on", "off": "switched off", "domain": "domain terms"}
MEASURE_TERMS = 64
LONG_S = 1800


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


@st.cache_resource(show_spinner=False)
def category_terms() -> dict[str, int]:
    return wordnet().category_terms()


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
    cols[0].metric("Active terms", f"{len(active):,}",
                   help="Distinct terms TAC may use: a name with several WordNet meanings counts once.")
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


def estimate(workspace, spec: dict, model: dict, device: str) -> VocabularyEstimate:
    """What encoding the active terms of ``spec`` costs with ``model`` on ``device`` here."""
    frame = _frame(spec)
    names = frame.loc[frame["on"], "name"].tolist()
    return vocabulary_estimate(model_picker.spec_of(model), names, spec["templates"], workspace.cache_dir, device)


def estimate_text(est: VocabularyEstimate) -> str:
    """One sentence: how long, for what, at which rate and where the rate comes from (markdown, escaped)."""
    if est.missing == 0:
        return f"All {est.terms:,} terms are encoded already for this model: runs skip this step."
    return (f"About **{widgets.duration(est.seconds)}** to encode {est.missing:,} terms × {est.prompts_per_term} "
            f"prompts at ~{est.rate.prompts_per_second:,.0f} prompts/s ({esc(est.rate.source)}).")


def setting_section(workspace, spec: dict, switch, key: str = "vocab_paper_setting") -> None:
    """Which setting ``spec`` is (the quick first-run one says why it was chosen) and one click to the paper's
    full setting with what it would cost here; ``switch()`` saves that change and returns whether it worked."""
    if vocab_spec.is_paper_setting(spec):
        return
    quick = spec["categories"] == list(vocab_spec.QUICK_CATEGORIES) and spec["templates"] == vocab_spec.QUICK_TEMPLATES
    if quick:
        st.info(f"Quick setting: {esc(vocab_spec.QUICK_REASON)}")
    model = model_picker.current_choice(workspace)
    full = vocab_spec.paper_setting(spec)
    cost = ""
    if model is not None:
        ok, est = widgets.attempt(lambda: estimate(workspace, full, model, st.session_state.get("pref_device", "auto")),
                                  "estimate the paper's setting")
        cost = f"; about {widgets.duration(est.seconds)} here" if ok and est.missing else ""
    n_terms = int(_frame(full)["on"].sum())
    if st.button(f"Use the paper's full setting ({n_terms:,} terms, 7 prompts{cost})", key=key,
                 help="Every WordNet noun and the paper's 7 prompt templates; your own terms and switched-off terms "
                      "stay as they are. Encoded once per model, then cached."):
        if switch():
            widgets.flash("success", "This set now uses the paper's full setting.")
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
    device = st.session_state.get("pref_device", "auto")
    ok, est = widgets.attempt(lambda: estimate(edit.workspace, edit.spec, model, device), "estimate the encoding cost")
    if not ok:
        return
    st.metric("Terms still to encode", f"{est.missing:,}", help=f"{est.terms - est.missing:,} of the active terms are "
                                                              "cached already.")
    st.markdown(estimate_text(est))
    ok, planned = widgets.attempt(lambda: planned_precision(device), "read the device")
    if ok and planned[1] == "bf16":
        st.caption("This CPU has AMX matrix units, so terms are encoded by a bfloat16 copy of the text tower: about "
                   "2.4x faster than fp32, each term's vector within 2e-3 of fp32 (cosine > 0.9999). Start TAC Studio "
                   "with TAC_STUDIO_TEXT_PRECISION=fp32 for exact fp32.")
    if est.missing == 0:
        return
    if est.seconds > LONG_S:
        st.warning("That is long. To cut it: choose tac3 or photo1 templates, keep only some WordNet categories "
                   "(e.g. noun.artifact, noun.state), or run on a GPU.")
    if st.button("Measure encoding speed", help=f"Loads the model here and encodes {MEASURE_TERMS} terms to time it.",
                 disabled=edit.locked):
        spec = model_picker.spec_of(model)
        with st.spinner("Measuring …"):
            ok, _ = widgets.attempt(lambda: measure_encoding_rate(
                spec, edit.spec["templates"], device, active[:MEASURE_TERMS],
                model_cache_dir(spec, edit.workspace.cache_dir)), "measure the encoding speed")
        if ok:
            st.rerun()
