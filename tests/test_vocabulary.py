"""Vocabularies: WordNet nouns as terms, term import and validation, deduplication, and the shipped domain
pack. (The WordNet asset itself: tests/test_wordnet.py; prompt templates: tests/test_prompts.py.)"""
from __future__ import annotations

import numpy as np
import pytest

from tac_core.errors import EmptyInputError, InvalidInputError
from tac_core.inputs.vocabulary import Term, Vocabulary, domain_packs, load_domain_pack
from tac_core.inputs.wordnet import WordNetNouns, normalize_term


@pytest.fixture(scope="module")
def wn() -> WordNetNouns:
    return WordNetNouns.load()


@pytest.fixture(scope="module")
def wordnet_vocab(wn) -> Vocabulary:
    return Vocabulary.wordnet(wordnet=wn)


# -- WordNet vocabulary -----------------------------------------------------------------------------------
def test_wordnet_vocabulary_collapses_names(wordnet_vocab):
    names = wordnet_vocab.names
    assert len(names) == 67186 == len({normalize_term(n) for n in names})
    bank = wordnet_vocab[wordnet_vocab.index_of("bank")]
    assert bank.synsets[0] == "bank.n.01" and len(bank.synsets) > 1
    assert bank.category == "noun.object" and bank.sources == ("wordnet",)
    assert sum(len(t.synsets) for t in wordnet_vocab) == 82115
    assert not wordnet_vocab.is_domain.any()


def test_wordnet_filters(wn):
    artifacts = Vocabulary.wordnet(categories=["noun.artifact"], wordnet=wn)
    assert {t.category for t in artifacts} == {"noun.artifact"}
    blemishes = Vocabulary.wordnet(subtree="blemish.n.01", wordnet=wn)
    crack = blemishes[blemishes.index_of("crack")]
    assert crack.synsets == ("crack.n.07",)  # only the sense inside the subtree
    with pytest.raises(InvalidInputError, match="noun.gadget"):
        Vocabulary.wordnet(categories=["noun.gadget"], wordnet=wn)
    with pytest.raises(EmptyInputError):
        Vocabulary.wordnet(categories="noun.food", subtree="blemish.n.01", wordnet=wn)


# -- domain terms and deduplication -----------------------------------------------------------------------
def test_dedupe_is_case_and_space_insensitive():
    vocab = Vocabulary.from_terms(["Solder Bridge", ("solder  bridge", "a short"), "solder_bridge", "void"])
    assert vocab.names == ["Solder Bridge", "void"]
    assert vocab[0].note == "a short" and vocab[0].sources == ("domain",)
    assert vocab.is_domain.dtype == np.bool_ and vocab.is_domain.all()


def test_domain_term_merges_with_wordnet(wordnet_vocab):
    merged = wordnet_vocab.add_domain_terms([("CRACK", "fracture line"), "solder bridge"])
    assert len(merged) == len(wordnet_vocab) + 1 and len(wordnet_vocab) == 67186  # immutable
    crack = merged[merged.index_of("crack")]
    assert crack.sources == ("wordnet", "domain") and crack.is_domain
    assert crack.synsets[0] == "crack.n.01" and crack.gloss == "a long narrow opening"
    assert crack.note == "fracture line" and crack.name == "crack"
    assert merged.names[-1] == "solder bridge" and merged.is_domain.sum() == 2
    # domain first: same single term, WordNet senses and gloss still kept
    other_way = Vocabulary.from_terms([("Crack", "fracture line")]) + Vocabulary.wordnet(subtree="opening.n.01")
    crack = other_way[0]
    assert crack.name == "Crack" and crack.sources == ("wordnet", "domain")
    assert crack.synsets == ("crack.n.01",) and crack.category == "noun.object" and crack.note == "fracture line"


def test_term_validation():
    with pytest.raises(InvalidInputError, match=r"item 2.*empty"):
        Vocabulary.from_terms(["ok", "   "])
    with pytest.raises(InvalidInputError, match=r"'bad\\x07term'.*item 1.*U\+0007"):
        Vocabulary.from_terms(["bad\x07term"])
    with pytest.raises(InvalidInputError, match="500 characters"):
        Vocabulary.from_terms(["x" * 500])
    assert Vocabulary.from_terms(["y" * 200]).names == ["y" * 200]


def test_load_txt(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_text("# defects\nhairline_crack\n\n  Scratch  \r\nscratch\n", encoding="utf-8")
    vocab = Vocabulary.load_terms_file(path)
    assert vocab.names == ["hairline crack", "Scratch"]
    path.write_text("ok\nbad\tterm\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="line 2 of terms.txt"):
        Vocabulary.load_terms_file(path)


def test_load_csv_with_header_note_and_bom(tmp_path):
    path = tmp_path / "terms.csv"
    path.write_bytes("\ufeffNote,TERM\n\"a short, between pads\",solder bridge\n,void\n".encode("utf-8"))
    vocab = Vocabulary.load_terms_file(path)
    assert vocab.names == ["solder bridge", "void"]
    assert vocab[0].note == "a short, between pads" and vocab[1].note == ""


def test_load_csv_without_header(tmp_path):
    path = tmp_path / "terms.csv"
    path.write_text("dent,pushed in\nburr\n", encoding="utf-8")
    vocab = Vocabulary.load_terms_file(path)
    assert vocab.names == ["dent", "burr"] and vocab[0].note == "pushed in"


def test_missing_terms_file(tmp_path):
    with pytest.raises(InvalidInputError, match="nope.txt.*cannot be read"):
        Vocabulary.load_terms_file(tmp_path / "nope.txt")


# -- vocabulary operations --------------------------------------------------------------------------------
def test_fingerprint_is_stable_and_order_sensitive():
    a = Vocabulary.from_terms(["crack", "dent"])
    assert a.fingerprint() == Vocabulary.from_terms([" Crack", ("DENT", "note ignored")]).fingerprint()
    assert a.fingerprint() != Vocabulary.from_terms(["dent", "crack"]).fingerprint()
    assert len(a.fingerprint()) == 64


def test_without_index_and_contains():
    vocab = Vocabulary.from_terms(["crack", "dent", "scratch"])
    assert vocab.without(["DENT"]).names == ["crack", "scratch"]
    assert vocab.names == ["crack", "dent", "scratch"]
    assert vocab.index_of("Scratch") == 2 and "crack" in vocab and "rust" not in vocab
    with pytest.raises(InvalidInputError, match="rust"):
        vocab.without(["rust"])
    with pytest.raises(InvalidInputError, match="rust"):
        vocab.index_of("rust")


def test_csv_round_trip(tmp_path, wn):
    vocab = Vocabulary.wordnet(subtree="blemish.n.01", wordnet=wn).add_domain_terms(
        [("crack", "fracture, thin"), ("solder bridge", "")]
    )
    frame = vocab.to_frame()
    assert list(frame.columns) == ["name", "sources", "synset", "category", "gloss", "note"]
    path = tmp_path / "out" / "vocab.csv"
    vocab.save_csv(path)
    again = Vocabulary.from_csv(path)
    assert list(again) == list(vocab)
    assert again[again.index_of("solder bridge")] == Term("solder bridge", ("domain",))
    with pytest.raises(InvalidInputError, match="not a saved vocabulary"):
        (tmp_path / "terms.csv").write_text("term\ncrack\n", encoding="utf-8")
        Vocabulary.from_csv(tmp_path / "terms.csv")


def test_domain_pack():
    assert "surface_defects" in domain_packs()
    pack = load_domain_pack("surface_defects")
    assert 60 <= len(pack) <= 90 and "solder bridge" in pack
    assert all(term.note and term.is_domain for term in pack)
    with pytest.raises(InvalidInputError, match="'toys'.*surface_defects"):
        load_domain_pack("toys")
