"""The WordNet asset, term import and validation, deduplication, and the shipped domain pack."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tac_core.errors import EmptyInputError, InvalidInputError
from tac_core.inputs.prompts import TAC_TEMPLATES, TEMPLATE_SETS, template_set
from tac_core.inputs.vocabulary import Term, Vocabulary, domain_packs, load_domain_pack
from tac_core.inputs.wordnet import WORDNET_ASSET, WordNetNouns, normalize_term

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wn() -> WordNetNouns:
    return WordNetNouns.load()


@pytest.fixture(scope="module")
def wordnet_vocab(wn) -> Vocabulary:
    return Vocabulary.wordnet(wordnet=wn)


# -- the asset --------------------------------------------------------------------------------------------
def test_asset_has_every_noun_synset(wn):
    with gzip.open(WORDNET_ASSET, "rt", encoding="utf-8") as fh:
        assert fh.readline().rstrip("\n").split("\t") == ["synset", "name", "category", "gloss", "hypernyms"]
    assert len(wn) == 82115
    assert len(set(wn.synsets)) == 82115
    assert WordNetNouns.load() is wn  # cached per process


def test_known_synset(wn):
    dog = wn.lookup("dog.n.01")
    assert dog.name == "dog" and dog.category == "noun.animal"
    assert dog.gloss.startswith("a member of the genus Canis")
    assert dog.hypernyms == ("canine.n.02", "domestic_animal.n.01")
    crack = wn.lookup("crack.n.07")
    assert crack.hypernyms == ("blemish.n.01",)
    # instance hypernyms count as hypernyms; "nan" must not be read as a missing value
    assert wn.lookup("paris.n.01").hypernyms == ("national_capital.n.01",)
    assert wn.lookup("nan.n.01").name == "nan"


def test_categories(wn):
    categories = dict(wn.categories())
    assert len(categories) == 26 and sum(categories.values()) == 82115
    assert categories["noun.Tops"] == 51
    assert [name for name, _ in wn.categories()] == sorted(categories)


def test_subtree(wn):
    under = wn.subtree("blemish.n.01")
    assert {"blemish.n.01", "crack.n.07", "dent.n.03", "scratch.n.10", "port-wine_stain.n.01"} <= under
    assert "crack.n.01" not in under and "dog.n.01" not in under
    assert len(wn.subtree("entity.n.01")) == 82115
    assert "paris.n.01" in wn.subtree("city.n.01")  # through an instance hypernym
    with pytest.raises(InvalidInputError, match="flaw.n.01"):
        wn.subtree("flaw.n.01")  # nltk resolves this lemma sense to defect.n.03; the asset has canonical ids only


def test_search(wn):
    hits = wn.search("crack", limit=5)
    assert hits[0].synset == "crack.n.01" and len(hits) == 5
    assert wn.search("  ") == []
    assert any(h.synset == "crack.n.07" for h in wn.search("break without complete separation"))


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
def test_normalize_term():
    assert normalize_term("  Hairline_Crack ") == normalize_term("hairline   crack") == "hairline crack"


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


# -- prompts ----------------------------------------------------------------------------------------------
def test_templates():
    assert len(TAC_TEMPLATES) == 7 and TAC_TEMPLATES[2] == "a origami {}."
    assert template_set("tac7") == TAC_TEMPLATES
    for templates in TEMPLATE_SETS.values():
        assert all(t.count("{}") == 1 for t in templates)
    assert template_set(["a photo of a {} on a belt."]) == ("a photo of a {} on a belt.",)
    with pytest.raises(InvalidInputError, match="'tac9'.*tac7, tac3, photo1"):
        template_set("tac9")
    for bad in (["no slot"], ["{} and {}"], ["a {name}"], []):
        with pytest.raises(InvalidInputError):
            template_set(bad)


# -- the generator ----------------------------------------------------------------------------------------
@pytest.mark.skipif(not os.environ.get("TAC_SLOW_TESTS"), reason="takes ~15 s; set TAC_SLOW_TESTS=1 to run")
@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(), reason="needs Debian's wordnet-base")
def test_generator_reproduces_the_asset(tmp_path):
    """The shipped asset is exactly what the script builds (from any hash seed)."""
    out = tmp_path / "nouns.tsv.gz"
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_wordnet_asset.py"), "--out", str(out)],
                   check=True, capture_output=True, env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"})
    assert out.read_bytes() == WORDNET_ASSET.read_bytes()
