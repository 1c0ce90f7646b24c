"""The WordNet nouns asset: every noun synset with its name, category, gloss and hypernyms, its lookups, and
the script that builds it."""
from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from tac_core.errors import InvalidInputError
from tac_core.inputs.wordnet import WORDNET_ASSET, WordNetNouns, normalize_term

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wn() -> WordNetNouns:
    return WordNetNouns.load()


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


def test_normalize_term():
    assert normalize_term("  Hairline_Crack ") == normalize_term("hairline   crack") == "hairline crack"


# -- the generator ----------------------------------------------------------------------------------------
@pytest.mark.slow  # ~15 s
@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(), reason="needs Debian's wordnet-base")
def test_generator_reproduces_the_asset(tmp_path):
    """The shipped asset is exactly what the script builds (from any hash seed)."""
    out = tmp_path / "nouns.tsv.gz"
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_wordnet_asset.py"), "--out", str(out)],
                   check=True, capture_output=True, env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"})
    assert out.read_bytes() == WORDNET_ASSET.read_bytes()
