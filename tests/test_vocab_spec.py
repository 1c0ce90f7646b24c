"""Saved vocabulary sets: the spec → Vocabulary, editing helpers, validation messages, sets in a workspace."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tac_core.inputs import vocab_spec
from tac_core.errors import EmptyInputError, InvalidInputError
from tac_core.inputs.wordnet import WordNetNouns, normalize_term
from tac_core.workspace.workspace import create_workspace


def spec(**changes) -> dict:
    return {**vocab_spec.default_spec(), **changes}


def test_default_spec_is_all_of_wordnet_with_the_paper_templates():
    vocab = vocab_spec.build_vocabulary(vocab_spec.default_spec())
    assert len(vocab) == 67186 and not vocab.is_domain.any()
    assert vocab_spec.default_spec()["templates"] == "tac7"


def test_filters_packs_terms_and_switched_off_terms_combine():
    wn = WordNetNouns.load()
    base = spec(categories=["noun.shape"], subtrees=["shape.n.02"], domain_packs=["surface_defects"],
                domain_terms=[{"term": "flux haze", "note": "dull film after soldering"}, {"term": "crack", "note": ""}])
    vocab = vocab_spec.build_vocabulary(base)
    wordnet_part = [t for t in vocab if "wordnet" in t.sources]
    under = wn.subtree("shape.n.02")
    assert wordnet_part and all(t.category == "noun.shape" and set(t.synsets) & under for t in wordnet_part)
    assert "flux haze" in vocab and vocab[vocab.index_of("flux haze")].note == "dull film after soldering"
    assert vocab[vocab.index_of("crack")].is_domain  # in the pack and the user's list: one term
    off = vocab_spec.build_vocabulary({**base, "disabled": ["Flux  Haze", "not a term at all"]})
    assert len(off) == len(vocab) - 1 and "flux haze" not in off
    switched = vocab_spec.switched_off({**base, "disabled": ["Flux  Haze", "not a term at all"]})
    assert switched == {normalize_term("flux haze"), normalize_term("not a term at all")}
    assert [t.name for t in vocab if t.key not in switched] == [t.name for t in off]  # the table's on/off is the run's


def test_only_domain_terms_and_everything_off():
    only = spec(wordnet=False, domain_terms=[{"term": "dent", "note": ""}])
    assert vocab_spec.build_vocabulary(only).names == ["dent"]
    with pytest.raises(EmptyInputError, match="switched off"):
        vocab_spec.build_vocabulary({**only, "disabled": ["dent"]})
    with pytest.raises(EmptyInputError):
        vocab_spec.build_vocabulary(spec(wordnet=False))


@pytest.mark.parametrize("bad, message", [
    (spec(categories=["noun.nonsense"]), "unknown WordNet category"),
    (spec(subtrees=["nothing.n.99"]), "not a WordNet 3.0 noun synset"),
    (spec(domain_packs=["no_such_pack"]), "unknown domain pack"),
    (spec(templates="tac99"), "unknown prompt template set"),
    (spec(version=2), "version 2"),
    ({**vocab_spec.default_spec(), "categoris": []}, "unknown field"),
    (spec(wordnet="yes"), "'wordnet' must be true or false"),
    (spec(categories="noun.state"), "'categories' must be a list"),
    (spec(domain_terms=[{"term": "ok\x07"}]), "control character"),
    (spec(domain_terms=[{"term": "x", "colour": "red"}]), "domain term 1"),
    (spec(domain_terms=[{"term": "x", "note": 3}]), "note of domain term 1"),
    ("not a dict", "JSON object"),
])
def test_validation_names_the_field(bad, message):
    with pytest.raises(InvalidInputError, match=message):
        vocab_spec.validate_spec(bad)


def test_validation_normalises_and_deduplicates():
    out = vocab_spec.validate_spec({"domain_terms": ["crack", {"term": " Crack "}, {"term": "dent"}],
                                    "disabled": ["bank", "BANK", " "]})
    assert out["domain_terms"] == [{"term": "crack", "note": ""}, {"term": "dent", "note": ""}]
    assert out["disabled"] == ["bank"] and out["templates"] == "tac7" and out["version"] == 1


def test_editing_helpers():
    s, added, already = vocab_spec.add_domain_terms(spec(disabled=["scratch"]), ["crack", ("scratch", "thin line"),
                                                                                 "CRACK"])
    assert added == 2 and already == ["CRACK"]
    assert s["disabled"] == []  # adding a switched-off term means it is wanted on
    s = vocab_spec.set_enabled(s, ["crack", "bank"], False)
    assert s["disabled"] == ["crack", "bank"]
    s = vocab_spec.set_enabled(s, ["Crack"], True)
    assert s["disabled"] == ["bank"]
    s = vocab_spec.remove_domain_terms(s, ["SCRATCH"])
    assert [t["term"] for t in s["domain_terms"]] == ["crack"]
    with pytest.raises(InvalidInputError, match="empty"):
        vocab_spec.add_domain_terms(s, ["  "])


def test_pasted_lists_and_uploaded_files():
    assert vocab_spec.parse_term_list("crack\n# a comment\n\nsolder bridge, tin between pins\nvoid\tgas bubble\n") == [
        ("crack", ""), ("solder bridge", "tin between pins"), ("void", "gas bubble")]
    with pytest.raises(EmptyInputError):
        vocab_spec.parse_term_list("\n# nothing\n")
    assert vocab_spec.read_terms_file("terms.csv", b"term,note\ncrack,a line\n") == [("crack", "a line")]
    assert vocab_spec.read_terms_file("t.txt", "\ufeffdélamination\nvoid\n".encode()) == [("délamination", ""),
                                                                                           ("void", "")]
    with pytest.raises(InvalidInputError, match="my list.docx"):
        vocab_spec.read_terms_file("my list.docx", b"x")
    with pytest.raises(InvalidInputError, match=r"^plant terms\.txt: is not UTF-8"):
        vocab_spec.read_terms_file("plant terms.txt", b"\xff\xfe\x00bad")
    with pytest.raises(InvalidInputError, match="plant.csv: has a 'note' column but no 'term'"):
        vocab_spec.read_terms_file("plant.csv", b"note\nx\n")


def test_change_set_applies_to_the_stored_set_and_saves_only_changes(tmp_path):
    ws = create_workspace("v", tmp_path)
    vocab_spec.ensure_default_set(ws)
    seen_by_tab_a = vocab_spec.load_spec(ws, "default")
    spec, version = vocab_spec.change_set(ws, "default", lambda s: vocab_spec.set_enabled(s, ["bank"], False))
    assert version == 2 and spec["disabled"] == ["bank"] == ws.load_vocab_set("default")["disabled"]
    # a second tab still showing the old set: its edit is applied to what is stored, so "bank" stays off
    spec, version = vocab_spec.change_set(ws, "default", lambda s: {**s, "templates": "photo1"})
    assert seen_by_tab_a["disabled"] == [] and spec["disabled"] == ["bank"] and spec["templates"] == "photo1"
    assert version == 3
    assert vocab_spec.change_set(ws, "default", lambda s: s) == (spec, None)  # nothing changed, nothing saved
    with pytest.raises(InvalidInputError, match="categor"):
        vocab_spec.change_set(ws, "default", lambda s: {**s, "categories": ["noun.nothing"]})
    assert ws.vocab_sets().set_index("name").loc["default", "version"] == 3
    ws.close()


def test_sets_in_a_workspace(tmp_path):
    ws = create_workspace("v", tmp_path)
    assert vocab_spec.ensure_default_set(ws) == "default"
    assert ws.load_vocab_set("default") == vocab_spec.default_spec()
    edited, _, _ = vocab_spec.add_domain_terms(ws.load_vocab_set("default"), ["<script>alert(1)</script>"])
    ws.save_vocab_set("plant", edited)
    assert vocab_spec.ensure_default_set(ws) == "plant"  # the most recently edited
    assert vocab_spec.load_spec(ws, "plant")["domain_terms"][0]["term"] == "<script>alert(1)</script>"
    with ws.transaction() as conn:
        conn.execute("UPDATE vocab_sets SET spec = ? WHERE name = 'plant'", (json.dumps({"templates": "x"}),))
    with pytest.raises(InvalidInputError, match="'plant' cannot be used: unknown prompt template set"):
        vocab_spec.load_spec(ws, "plant")
    assert "WordNet (all categories); 1 own term(s); templates tac7" == vocab_spec.spec_summary(edited)
    ws.close()


def test_every_category_count_matches_wordnet():
    wn = WordNetNouns.load()
    for category, _ in wn.categories()[:3]:
        vocab = vocab_spec.build_vocabulary(spec(categories=[category]))
        keys = {normalize_term(wn.names[r]) for r in range(len(wn)) if wn.synset_categories[r] == category}
        assert len(vocab) == len(keys)
    assert np.all([t.category for t in vocab])
