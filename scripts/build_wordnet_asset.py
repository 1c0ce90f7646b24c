"""Build ``tac_core/assets/wordnet_nouns.tsv.gz``: one row per WordNet 3.0 noun synset, read through nltk.

The app ships this small table so that no WordNet install (and no ``nltk.download``, which needs the
network) is needed at runtime. The output is byte-for-byte reproducible (fixed row order, gzip mtime 0).

WordNet comes from Debian's ``wordnet-base`` (``/usr/share/wordnet``) unless ``--nltk-data`` names an nltk
data root that already holds ``corpora/wordnet``. nltk only reads under its data roots (``nltk.data.path``),
so the Debian files are copied (not linked: links resolving outside the root are refused) into a temporary
root added there. Debian's copy lacks two files nltk's reader opens: ``lexnames`` (written below, WordNet's
fixed list of lexicographer files) and ``index.sense`` (only for sense-key lookups, so it may be empty).

    python scripts/build_wordnet_asset.py [--wordnet-dir DIR] [--nltk-data ROOT] [--out PATH]
"""
from __future__ import annotations

import argparse
import gzip
import io
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tac_core" / "assets" / "wordnet_nouns.tsv.gz"
COLUMNS = ("synset", "name", "category", "gloss", "hypernyms")
EXPECTED_NOUN_SYNSETS = 82115  # WordNet 3.0

# WordNet's lexicographer files, in the numbering the data files use (lexnames(5WN)).
LEXNAMES = """\
adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body
noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive
noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity
noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition
verb.communication verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion
verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl""".split()
SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
WORDNET_FILES = [f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")] + [
    f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")
]


def lexnames_text() -> str:
    return "".join(
        f"{i:02d}\t{name}\t{SYNTACTIC_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES)
    )


def make_nltk_root(wordnet_dir: Path, root: Path) -> Path:
    """Lay out an nltk data root (``root/corpora/wordnet``) from a plain WordNet dict folder."""
    target = root / "corpora" / "wordnet"
    target.mkdir(parents=True)
    for name in WORDNET_FILES:
        source = wordnet_dir / name
        if not source.is_file():
            sys.exit(f"error: {source} is missing; install Debian's wordnet-base or pass --nltk-data")
        shutil.copyfile(source, target / name)
    (target / "lexnames").write_text(lexnames_text(), encoding="utf-8")
    (target / "index.sense").write_text("", encoding="utf-8")
    return root


def clean(text: str) -> str:
    """One line, no tabs: the TSV is read without quoting."""
    return re.sub(r"\s+", " ", text).strip()


def noun_rows(nltk_root: Path):
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    nltk.data.path.insert(0, str(nltk_root.resolve()))
    corpus_dir = nltk.data.find("corpora/wordnet")
    with warnings.catch_warnings():  # "multilingual functions are not available": we need English only
        warnings.simplefilter("ignore")
        wn = WordNetCorpusReader(corpus_dir, None)
    if wn.get_version() != "3.0":
        sys.exit(f"error: expected WordNet 3.0, found {wn.get_version()}")
    for synset in wn.all_synsets("n"):
        # nltk keeps pointers in sets, whose order changes between runs: sort for a reproducible file.
        hypernyms = sorted(h.name() for h in synset.hypernyms() + synset.instance_hypernyms())
        yield (
            synset.name(),
            clean(synset.lemmas()[0].name().replace("_", " ")),
            synset.lexname(),
            clean(synset.definition()),
            " ".join(hypernyms),
        )


def build(nltk_root: Path) -> tuple[bytes, int]:
    lines = ["\t".join(COLUMNS)] + ["\t".join(row) for row in noun_rows(nltk_root)]
    text = "\n".join(lines) + "\n"
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    return buf.getvalue(), len(lines) - 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--nltk-data", type=Path, help="an nltk data root holding corpora/wordnet")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from tac_core.atomic import write_bytes

    with tempfile.TemporaryDirectory(prefix="wordnet-") as tmp:
        nltk_root = args.nltk_data or make_nltk_root(args.wordnet_dir, Path(tmp))
        data, count = build(nltk_root)
    if count != EXPECTED_NOUN_SYNSETS:
        sys.exit(f"error: read {count} noun synsets, WordNet 3.0 has {EXPECTED_NOUN_SYNSETS}")
    write_bytes(args.out, data)
    print(f"wrote {args.out} ({count} noun synsets, {len(data) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
