"""WordNet 3.0's noun synsets, read from the shipped asset ``tac_core/assets/wordnet_nouns.tsv.gz``.

The asset is built once by ``scripts/build_wordnet_asset.py`` from a WordNet 3.0 install, so nothing needs
WordNet or a download at runtime. :class:`WordNetNouns` holds the synsets in asset order as parallel lists,
with the lookups the vocabulary editor uses (by synset, by category, under a hypernym, by name).
"""
from __future__ import annotations

import csv
import functools
import importlib.resources
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import InvalidInputError, TacError

ASSETS_DIR = Path(str(importlib.resources.files("tac_core") / "assets"))  # package data (pyproject.toml)
WORDNET_ASSET = ASSETS_DIR / "wordnet_nouns.tsv.gz"
WORDNET_COLUMNS = ("synset", "name", "category", "gloss", "hypernyms")


def normalize_term(text: str) -> str:
    """The key two terms are the same by: case-folded, ``_`` as space, whitespace collapsed and stripped."""
    return " ".join(text.replace("_", " ").casefold().split())


def sense_number(synset_id: str) -> int:
    """WordNet's sense number of a synset id (``bank.n.02`` → 2): lower numbers are more frequent senses."""
    return int(synset_id.rsplit(".", 1)[1])


@dataclass(frozen=True)
class WordNetEntry:
    """One noun synset of the asset."""

    synset: str
    name: str
    category: str
    gloss: str
    hypernyms: tuple[str, ...]


class WordNetNouns:
    """WordNet 3.0's noun synsets in asset order, as parallel lists; use :meth:`load` (cached per process)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.synsets: list[str] = frame["synset"].tolist()
        self.names: list[str] = frame["name"].tolist()
        self.synset_categories: list[str] = frame["category"].tolist()
        self.glosses: list[str] = frame["gloss"].tolist()
        self.hypernyms: list[tuple[str, ...]] = [tuple(h.split()) for h in frame["hypernyms"].tolist()]
        self._row_of = {synset: row for row, synset in enumerate(self.synsets)}

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "WordNetNouns":
        return _load_wordnet(Path(path or WORDNET_ASSET).resolve())

    def __len__(self) -> int:
        return len(self.synsets)

    def row(self, synset_id: str) -> int:
        try:
            return self._row_of[synset_id]
        except KeyError:
            raise InvalidInputError(
                f"{synset_id!r} is not a WordNet 3.0 noun synset id; ids look like 'crack.n.01' "
                "(use the search to find one)."
            ) from None

    def lookup(self, synset_id: str) -> WordNetEntry:
        row = self.row(synset_id)
        return WordNetEntry(synset_id, self.names[row], self.synset_categories[row], self.glosses[row],
                            self.hypernyms[row])

    def categories(self) -> list[tuple[str, int]]:
        """``(category, number of synsets)``, sorted by category name (``noun.Tops`` … ``noun.time``)."""
        counts: dict[str, int] = defaultdict(int)
        for category in self.synset_categories:
            counts[category] += 1
        return sorted(counts.items())

    def category_terms(self) -> dict[str, int]:
        """Per category, its distinct terms (names by :func:`normalize_term`): what it adds to a vocabulary, where
        a name with several meanings (synsets) counts once. A name in two categories counts in both."""
        names: dict[str, set[str]] = defaultdict(set)
        for category, key in zip(self.synset_categories, self.keys):
            names[category].add(key)
        return {category: len(keys) for category, keys in sorted(names.items())}

    @functools.cached_property
    def keys(self) -> list[str]:
        """:func:`normalize_term` of each name: the key synsets are collapsed by."""
        return [normalize_term(name) for name in self.names]

    @functools.cached_property
    def _children(self) -> dict[str, list[str]]:
        children: dict[str, list[str]] = defaultdict(list)
        for synset, parents in zip(self.synsets, self.hypernyms):
            for parent in parents:
                children[parent].append(synset)
        return children

    def subtree(self, synset_id: str) -> set[str]:
        """``synset_id`` and every synset below it (hypernym and instance-hypernym links, transitively)."""
        self.row(synset_id)
        found = {synset_id}
        stack = [synset_id]
        while stack:
            for child in self._children.get(stack.pop(), ()):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return found

    def search(self, text: str, limit: int = 20) -> list[WordNetEntry]:
        """Synsets whose name or gloss contains ``text``: exact names first, then prefixes, names, glosses.

        Within each rank, shorter names and more frequent senses come first.
        """
        query = normalize_term(text)
        if not query:
            return []
        ranked = []
        for row, (key, gloss) in enumerate(zip(self.keys, self.glosses)):
            if query in key:
                rank = 0 if key == query else 1 if key.startswith(query) else 2
            elif query in gloss.casefold():
                rank = 3
            else:
                continue
            ranked.append((rank, len(key), sense_number(self.synsets[row]), row))
        ranked.sort()
        return [self.lookup(self.synsets[item[-1]]) for item in ranked[:limit]]


@functools.lru_cache(maxsize=4)
def _load_wordnet(path: Path) -> WordNetNouns:
    try:
        # No quoting (glosses contain '"'), and no NA parsing: "nan" and "null" are nouns too.
        frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise TacError(f"The WordNet asset {path} is missing; reinstall TAC Studio or rebuild it with "
                       "scripts/build_wordnet_asset.py.") from None
    if tuple(frame.columns) != WORDNET_COLUMNS:
        raise TacError(f"The WordNet asset {path} has columns {list(frame.columns)}, expected "
                       f"{list(WORDNET_COLUMNS)}; rebuild it with scripts/build_wordnet_asset.py.")
    return WordNetNouns(frame)
