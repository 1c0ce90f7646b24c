"""Vocabulary page: which terms TAC may use, as named sets saved in the workspace.

The set being edited is saved on every change (``Workspace.save_vocab_set``), so a refresh or a crash never loses
a decision. Widgets that show the set carry the set's version in their key: after each save they are drawn
afresh from what was stored. Term browsing and the encoding cost live in :mod:`ui.vocab_terms`.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from tac_core.inputs import vocab_spec
from tac_core.inputs.prompts import TEMPLATE_SETS
from tac_core.inputs.vocabulary import domain_packs, load_domain_pack
from ui import access, state, vocab_terms, widgets
from ui.safe_text import esc

SET_KEY = "vocab_set_name"  # the set being edited (kept across pages; the cluster page preselects it)
_IMPORT_ROUND = "vocab_import_round"


@st.cache_data(show_spinner=False)
def pack_size(name: str) -> int:
    return len(load_domain_pack(name))


def render() -> None:
    workspace = state.require_workspace()
    widgets.sidebar_status(workspace)
    st.title("Vocabulary")
    st.caption(f"Workspace: {esc(workspace.name)}")
    st.markdown("TAC borrows meaning from nouns: it keeps the ones that fit your images and pairs every image "
                "with a mix of them. Add the words your plant uses (\"solder bridge\", \"delamination\"), switch off "
                "misleading ones, and narrow WordNet when encoding all of it is too slow.")
    locked = not access.notice(workspace, "vocabulary")
    ok, name = widgets.attempt(lambda: _current_set(workspace), "read the vocabulary sets")
    if not ok:
        return
    if name is None:
        st.info("This workspace has no vocabulary set yet; a reviewer makes one by opening this page.")
        return
    ok, spec = widgets.attempt(lambda: vocab_spec.load_spec(workspace, name), "read the vocabulary set")
    if not ok:
        return
    sets = workspace.vocab_sets().set_index("name")
    version = int(sets.loc[name, "version"])
    edit = Editor(workspace, name, spec, version, locked)
    _set_picker(workspace, edit, list(sets.index))
    widgets.show_flashes()
    vocab = vocab_terms.active_count(edit)
    _wordnet_section(edit)
    _domain_section(edit)
    vocab_terms.browse_section(edit)
    _templates_section(edit)
    vocab_terms.cost_section(edit, vocab)
    st.divider()
    widgets.page_link("pages/cluster.py")


def _current_set(workspace) -> str | None:
    default = vocab_spec.ensure_default_set(workspace)
    if default is None:
        return None
    names = set(workspace.vocab_sets()["name"])
    if st.session_state.get(SET_KEY) not in names:
        st.session_state[SET_KEY] = default
    return st.session_state[SET_KEY]


class Editor:
    """The set being edited: ``change(fn)`` applies ``fn(spec) -> spec`` and saves at once; ``locked`` (a viewer)
    disables every widget that would change it."""

    def __init__(self, workspace, name: str, spec: dict, version: int, locked: bool = False) -> None:
        self.workspace, self.name, self.spec, self.version, self.locked = workspace, name, spec, version, locked

    def key(self, part: str) -> str:
        return f"vocab_{self.name}_{self.version}_{part}"

    def change(self, fn, what: str) -> bool:
        try:
            self.spec, version = vocab_spec.change_set(self.workspace, self.name, fn)
            self.version = version or self.version
            return True
        except Exception as exc:  # noqa: BLE001 - shown in plain words on the page
            from tac_core.errors import TacError

            if not isinstance(exc, TacError):
                state.LOG.exception("vocabulary change failed")
            widgets.flash("error", f"Could not {what}: {exc}" if isinstance(exc, TacError) else
                          f"Could not {what} because of an unexpected problem ({type(exc).__name__}).")
            return False

    def on_change(self, field: str, widget_part: str, what: str, convert=lambda v: v):
        """A widget callback storing the widget's value into ``spec[field]``."""
        key = self.key(widget_part)

        def callback() -> None:
            value = convert(st.session_state[key])
            self.change(lambda spec: {**spec, field: value}, what)
        return callback


def _set_picker(workspace, edit: Editor, names: list[str]) -> None:
    cols = st.columns([3, 3])
    with cols[0]:
        st.selectbox("Vocabulary set", names, index=names.index(edit.name), key="vocab_set_pick",
                     on_change=lambda: st.session_state.__setitem__(SET_KEY, st.session_state["vocab_set_pick"]),
                     help="Runs keep a copy of the set they used; editing a set never changes a finished run.")
        st.caption(f"Saved automatically on every change (version {edit.version}).")
    with cols[1], st.form("vocab_new_set", clear_on_submit=True):
        new_name = st.text_input("New set name", disabled=edit.locked)
        if st.form_submit_button("Save as new set", disabled=edit.locked):
            def save():
                if new_name.strip() in names:
                    raise vocab_spec.InvalidInputError(f"a vocabulary set named {new_name.strip()!r} exists already; "
                                                       "choose another name.")
                workspace.save_vocab_set(new_name, edit.spec)
            ok, _ = widgets.attempt(save, "save the new set")
            if ok:
                st.session_state[SET_KEY] = new_name.strip()
                widgets.flash("success", f"Saved as {new_name.strip()}; now editing it.")
                st.rerun()


def _wordnet_section(edit: Editor) -> None:
    st.subheader("WordNet nouns")
    spec, wn = edit.spec, vocab_terms.wordnet()
    st.toggle("Use WordNet nouns", value=spec["wordnet"], key=edit.key("wordnet"),
              on_change=edit.on_change("wordnet", "wordnet", "switch WordNet"), disabled=edit.locked)
    if not spec["wordnet"]:
        st.caption("Only domain terms are used.")
        return
    counts = dict(wn.categories())
    st.multiselect("WordNet categories", list(counts), default=spec["categories"], key=edit.key("categories"),
                   format_func=lambda c: f"{c} ({counts[c]:,})", placeholder="All categories",
                   on_change=edit.on_change("categories", "categories", "filter the categories", list),
                   disabled=edit.locked,
                   help="Empty means all 26 categories. For product photos noun.artifact, noun.state, noun.shape and "
                        "noun.substance hold most useful words.")
    query = st.text_input("Find a synset for a subtree", key="vocab_synset_query",
                          placeholder="e.g. blemish, crack, defect")
    if query.strip():
        found = wn.search(query, limit=30)
        if not found:
            st.caption("No synset matches.")
        else:
            entries = {e.synset: e for e in found}
            pick = st.selectbox("Synset", list(entries), key="vocab_synset_pick",
                                format_func=lambda s: f"{s} — {entries[s].gloss[:90]}")
            if st.button("Add subtree", disabled=edit.locked):
                if edit.change(lambda s: {**s, "subtrees": s["subtrees"] + [pick]}, "add the subtree"):
                    widgets.flash("success", f"Only nouns under {pick} are used now.")
                st.rerun()
    if spec["subtrees"]:
        st.multiselect("Subtrees in use (remove one to widen again)", spec["subtrees"], default=spec["subtrees"],
                       key=edit.key("subtrees"), disabled=edit.locked,
                       on_change=edit.on_change("subtrees", "subtrees", "change the subtrees", list))
        rows = [wn.lookup(s) for s in spec["subtrees"]]
        st.dataframe(pd.DataFrame({"synset": [r.synset for r in rows], "name": [r.name for r in rows],
                                   "nouns below": [len(wn.subtree(r.synset)) for r in rows],
                                   "definition": [r.gloss for r in rows]}), hide_index=True, width="stretch")


def _domain_section(edit: Editor) -> None:
    st.subheader("Domain terms")
    st.caption("Your own words always join TAC's text space and always compete to name clusters.")
    for pack in domain_packs():
        st.checkbox(f"Domain pack: {pack} ({pack_size(pack)} terms)", value=pack in edit.spec["domain_packs"],
                    key=edit.key(f"pack_{pack}"), on_change=_toggle_pack, args=(edit, pack, edit.key(f"pack_{pack}")),
                    disabled=edit.locked)
    cols = st.columns(2)
    with cols[0], st.form("vocab_add_term", clear_on_submit=True):
        term = st.text_input("Domain term", placeholder="e.g. solder bridge", disabled=edit.locked)
        note = st.text_input("Note (optional)", placeholder="what it looks like", disabled=edit.locked)
        if st.form_submit_button("Add domain term", disabled=edit.locked):
            _add(edit, lambda: [(term, note)])
    with cols[1], st.form("vocab_paste", clear_on_submit=True):
        text = st.text_area("Paste terms (one per line; 'term, note' adds a note)", height=110, disabled=edit.locked)
        if st.form_submit_button("Add pasted terms", disabled=edit.locked):
            _add(edit, lambda: vocab_spec.parse_term_list(text))
    round_ = st.session_state.get(_IMPORT_ROUND, 0)
    upload = st.file_uploader("Import terms (.txt or .csv)", type=["txt", "csv"], key=f"vocab_import_{round_}",
                              help="A .txt with one term per line, or a .csv with a 'term' column and optionally a "
                                   "'note' column.", disabled=edit.locked)
    if st.button("Import terms", disabled=edit.locked):
        if upload is None:
            st.error("Choose a .txt or .csv file first.")
        else:
            st.session_state[_IMPORT_ROUND] = round_ + 1
            _add(edit, lambda: vocab_spec.read_terms_file(upload.name, upload.getvalue()))
    own = edit.spec["domain_terms"]
    if own:
        st.markdown(f"**Your terms** ({len(own)})")
        st.dataframe(pd.DataFrame(own), hide_index=True, width="stretch")
        terms = [t["term"] for t in own]
        drop = st.multiselect("Remove domain terms", terms, key=edit.key("remove"), disabled=edit.locked)
        if st.button("Remove selected terms", disabled=edit.locked):
            if not drop:
                st.error("Choose the terms to remove first.")
            else:
                if edit.change(lambda s: vocab_spec.remove_domain_terms(s, drop), "remove the terms"):
                    widgets.flash("success", f"Removed {len(drop)} term(s).")
                st.rerun()  # also on failure: the error was flashed, and flashes show from the top of the page


def _toggle_pack(edit: Editor, pack: str, key: str) -> None:
    on = st.session_state[key]
    edit.change(lambda s: {**s, "domain_packs": sorted(set(s["domain_packs"]) - {pack} | ({pack} if on else set()))},
                "switch the domain pack")


def _add(edit: Editor, read_items) -> None:
    ok, items = widgets.attempt(read_items, "read the terms")
    if not ok:
        return
    result = {}

    def apply(spec):
        new, result["added"], result["already"] = vocab_spec.add_domain_terms(spec, items)
        return new
    if edit.change(apply, "add the terms"):
        text = f"Added {result['added']} term(s)."
        if result["already"]:
            text += f" Already there: {', '.join(result['already'][:10])}{' …' if len(result['already']) > 10 else ''}."
        widgets.flash("success" if result["added"] else "info", text)
    st.rerun()  # also on failure (a term too long, a control character): show the flashed error now, not later


def _templates_section(edit: Editor) -> None:
    st.subheader("Prompt templates")
    options = list(TEMPLATE_SETS)
    st.radio("Prompt templates", options, index=options.index(edit.spec["templates"]), key=edit.key("templates"),
             format_func=lambda t: f"{t}: {vocab_spec.TEMPLATE_NOTES[t]}",
             on_change=edit.on_change("templates", "templates", "change the templates"), disabled=edit.locked)
    st.caption("Each term is embedded as the mean over its prompts (e.g. " +
               esc(" / ".join(TEMPLATE_SETS[edit.spec["templates"]][:3])) + "). Encoding time grows with the "
               "number of prompts; quality gains from more prompts are modest.")
