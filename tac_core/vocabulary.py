"""The nouns TAC embeds: WordNet's noun synsets plus a user's domain terms, as one ordered list of names.

TAC draws its semantics from an external vocabulary (TAC_METHOD.md): the paper embeds one name per WordNet
noun synset. WordNet 3.0 has 82,115 noun synsets, but many share a display name ("bank", "crane"); collapsing
identical names (case- and space-insensitively, see :func:`normalize_term`) leaves 67,186 distinct names.
We encode each distinct name once: CLIP's text encoder would give the same vector for every copy, and
duplicates would only split one noun's softmax mass. A collapsed :class:`Term` keeps all its synset ids,
most frequent sense first (WordNet's sense number in the id, ``bank.n.01`` before ``bank.n.02``).

WordNet is read from ``assets/wordnet_nouns.tsv.gz`` (built by ``scripts/build_wordnet_asset.py``), so no
WordNet install or download is needed at runtime. Domain terms ("solder bridge") come from the user or a
shipped pack in ``assets/domain_packs/``; a domain term equal to a WordNet name merges into that term.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from . import atomic
from .errors import EmptyInputError, InvalidInputError, TacError

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
WORDNET_ASSET = ASSETS_DIR / "wordnet_nouns.tsv.gz"
DOMAIN_PACKS_DIR = ASSETS_DIR / "domain_packs"
WORDNET_COLUMNS = ("synset", "name", "category", "gloss", "hypernyms")
FRAME_COLUMNS = ("name", "sources", "synset", "category", "gloss", "note")
SOURCES = ("wordnet", "domain")  # the order Term.sources is always kept in
MAX_TERM_LENGTH = 200


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
            ranked.append((rank, len(key), _sense_number(self.synsets[row]), row))
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


def normalize_term(text: str) -> str:
    """The key two terms are the same by: case-folded, ``_`` as space, whitespace collapsed and stripped."""
    return " ".join(text.replace("_", " ").casefold().split())


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")


def validated_term(text: object, where: str) -> str:
    """A user's term as displayed (``_`` as space, whitespace collapsed), or a clear error naming it."""
    if not isinstance(text, str):
        raise InvalidInputError(f"The term at {where} is {text!r}, not text.")
    stripped = text.strip()
    if not stripped:
        raise InvalidInputError(f"The term at {where} is empty; write a term or remove it.")
    control = next((ch for ch in stripped if unicodedata.category(ch) == "Cc"), None)
    if control is not None:
        raise InvalidInputError(f"The term {_shown(stripped)} at {where} contains the control character "
                                f"U+{ord(control):04X}; remove it.")
    if len(stripped) > MAX_TERM_LENGTH:
        raise InvalidInputError(f"The term {_shown(stripped)} at {where} is {len(stripped)} characters long; "
                                f"terms may have at most {MAX_TERM_LENGTH}.")
    return " ".join(stripped.replace("_", " ").split())


@dataclass(frozen=True)
class Term:
    """One name to embed. ``synsets[0]`` is the primary WordNet sense; domain-only terms have none."""

    name: str
    sources: tuple[str, ...]
    synsets: tuple[str, ...] = ()
    category: str | None = None
    gloss: str = ""
    note: str = ""

    @property
    def is_domain(self) -> bool:
        return "domain" in self.sources

    @property
    def key(self) -> str:
        return normalize_term(self.name)


def _merge(first: Term, second: Term) -> Term:
    """Two terms with one key as one: ``first``'s name and place, the WordNet senses, the domain note."""
    synsets = first.synsets + tuple(s for s in second.synsets if s not in first.synsets)
    primary = first if first.synsets or not second.synsets else second
    return Term(
        name=first.name,
        sources=tuple(s for s in SOURCES if s in first.sources or s in second.sources),
        synsets=synsets,
        category=primary.category,
        gloss=primary.gloss,
        note=first.note or second.note,
    )


def _sense_number(synset_id: str) -> int:
    return int(synset_id.rsplit(".", 1)[1])


class Vocabulary:
    """An ordered list of :class:`Term`, deduplicated by :func:`normalize_term`; never changed in place."""

    def __init__(self, terms: Iterable[Term] = ()) -> None:
        merged: dict[str, Term] = {}
        for term in terms:
            key = term.key
            merged[key] = _merge(merged[key], term) if key in merged else term
        self._terms = tuple(merged.values())
        self._index = {key: i for i, key in enumerate(merged)}

    @classmethod
    def _unique(cls, terms: list[Term], keys: list[str]) -> "Vocabulary":
        """Skip deduplication where the caller already has distinct keys (WordNet's 67k names)."""
        vocab = cls.__new__(cls)
        vocab._terms = tuple(terms)
        vocab._index = {key: i for i, key in enumerate(keys)}
        return vocab

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def wordnet(cls, categories: str | Iterable[str] | None = None,
                subtree: str | Iterable[str] | None = None,
                wordnet: WordNetNouns | None = None) -> "Vocabulary":
        """WordNet's nouns, optionally only those in ``categories`` and/or under ``subtree`` synset ids."""
        wn = wordnet if wordnet is not None else WordNetNouns.load()
        rows: Iterable[int] = range(len(wn))
        if categories is not None:
            wanted = {categories} if isinstance(categories, str) else set(categories)
            known = {name for name, _ in wn.categories()}
            if wanted - known:
                raise InvalidInputError(f"Unknown WordNet categories {sorted(wanted - known)}; "
                                        f"known: {', '.join(sorted(known))}.")
            rows = [r for r in rows if wn.synset_categories[r] in wanted]
        if subtree is not None:
            roots = [subtree] if isinstance(subtree, str) else list(subtree)
            under = set().union(*(wn.subtree(root) for root in roots))
            rows = [r for r in rows if wn.synsets[r] in under]
        groups: dict[str, list[int]] = defaultdict(list)
        for row in rows:
            groups[wn.keys[row]].append(row)
        if not groups:
            raise EmptyInputError(f"No WordNet noun is in categories {categories} and under {subtree}; "
                                  "widen the selection.")
        terms = []
        for group in groups.values():
            if len(group) > 1:
                group.sort(key=lambda r: (_sense_number(wn.synsets[r]), r))
            first = group[0]
            terms.append(Term(wn.names[first], ("wordnet",), tuple(wn.synsets[r] for r in group),
                              wn.synset_categories[first], wn.glosses[first]))
        return cls._unique(terms, list(groups))

    @classmethod
    def from_terms(cls, items: Iterable[str | tuple[str, str]]) -> "Vocabulary":
        """Domain terms from strings or ``(term, note)`` pairs."""
        def rows():
            for number, item in enumerate(items, start=1):
                text, note = (item, "") if isinstance(item, str) else item
                yield text, note, f"item {number}"
        return cls._from_rows(rows())

    @classmethod
    def _from_rows(cls, rows: Iterable[tuple[object, str, str]]) -> "Vocabulary":
        return cls(Term(validated_term(text, where), ("domain",), note=" ".join(str(note or "").split()))
                   for text, note, where in rows)

    @classmethod
    def load_terms_file(cls, path: str | os.PathLike) -> "Vocabulary":
        """Domain terms from a ``.txt`` (one per line, ``#`` comments) or ``.csv`` (``term``, ``note``) file.

        A CSV without a header row may have one or two columns: term, then note.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".txt", ".csv"):
            raise InvalidInputError(f"{path}: terms must come from a .txt file (one term per line) or a .csv "
                                    "file (a 'term' column, optionally a 'note' column).")
        text = _read_text(path)
        rows = _txt_rows(text, path.name) if suffix == ".txt" else _csv_rows(text, path.name)
        vocab = cls._from_rows(rows)
        if not vocab:
            raise EmptyInputError(f"{path}: holds no terms; write one term per line.")
        return vocab

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> "Vocabulary":
        """Read back a file written by :meth:`save_csv`."""
        path = Path(path)
        reader = csv.DictReader(io.StringIO(_read_text(path), newline=""), restval="")
        missing = [c for c in FRAME_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise InvalidInputError(f"{path}: is not a saved vocabulary (missing columns {missing}); "
                                    "load a list of terms with load_terms_file instead.")
        terms = []
        for rec in _csv_records(reader, path.name):
            where = f"line {reader.line_num} of {path.name}"
            sources = tuple(rec["sources"].split("+"))
            if not set(sources) <= set(SOURCES):
                raise InvalidInputError(f"{path}: {where} has sources {rec['sources']!r}; expected "
                                        "'wordnet', 'domain' or 'wordnet+domain'.")
            terms.append(Term(validated_term(rec["name"], where), sources, tuple(rec["synset"].split()),
                              rec["category"] or None, rec["gloss"], rec["note"]))
        return cls(terms)

    def add_domain_terms(self, items: Iterable[str | tuple[str, str]]) -> "Vocabulary":
        return self + Vocabulary.from_terms(items)

    def __add__(self, other: "Vocabulary") -> "Vocabulary":
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return Vocabulary(self._terms + other._terms)

    def without(self, names: Iterable[str]) -> "Vocabulary":
        """This vocabulary with the given terms switched off (matched by :func:`normalize_term`)."""
        drop = {normalize_term(name): name for name in names}
        unknown = [name for key, name in drop.items() if key not in self._index]
        if unknown:
            raise InvalidInputError(f"Cannot switch off {unknown}: not in the vocabulary.")
        return Vocabulary(t for t in self._terms if t.key not in drop)

    # -- access -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._terms)

    def __getitem__(self, index: int) -> Term:
        return self._terms[index]

    def __iter__(self) -> Iterator[Term]:
        return iter(self._terms)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_term(name) in self._index

    def __repr__(self) -> str:
        return f"<Vocabulary of {len(self)} terms, {int(self.is_domain.sum())} domain>"

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._terms]

    @property
    def is_domain(self) -> np.ndarray:
        return np.fromiter((t.is_domain for t in self._terms), dtype=np.bool_, count=len(self._terms))

    def index_of(self, name: str) -> int:
        try:
            return self._index[normalize_term(name)]
        except KeyError:
            raise InvalidInputError(f"{name!r} is not in the vocabulary.") from None

    def fingerprint(self) -> str:
        """SHA-256 of the normalised names in order: equal fingerprints mean equal text embeddings."""
        return hashlib.sha256("\n".join(self._index).encode("utf-8")).hexdigest()

    def to_frame(self) -> pd.DataFrame:
        """One row per term; ``synset``: its synset ids, primary first; ``sources``: e.g. 'wordnet+domain'."""
        return pd.DataFrame(
            [(t.name, "+".join(t.sources), " ".join(t.synsets), t.category or "", t.gloss, t.note)
             for t in self._terms],
            columns=list(FRAME_COLUMNS),
        )

    def save_csv(self, path: str | os.PathLike) -> None:
        atomic.write_text(path, self.to_frame().to_csv(index=False))


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: is not UTF-8 text (byte 0x{raw[exc.start]:02x} at position "
                                f"{exc.start}); save it with UTF-8 encoding and load it again.") from None


def _txt_rows(text: str, file_name: str) -> Iterator[tuple[str, str, str]]:
    # split("\n"), not splitlines(): a stray control character must be reported, not taken as a line break.
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield stripped, "", f"line {number} of {file_name}"


def _csv_records(reader, file_name: str) -> Iterator:
    """``reader``'s records, with a CSV syntax error reported as the user's problem."""
    try:
        yield from reader
    except csv.Error as exc:
        raise InvalidInputError(f"{file_name}: is not a readable CSV file ({exc}).") from None


def _csv_rows(text: str, file_name: str) -> list[tuple[str, str, str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    records = [(reader.line_num, row) for row in _csv_records(reader, file_name)
               if any(cell.strip() for cell in row)]
    if not records:
        return []
    header = [cell.strip().casefold() for cell in records[0][1]]
    if "term" in header:
        term_col, note_col = header.index("term"), header.index("note") if "note" in header else None
        records = records[1:]
    elif "note" in header:
        raise InvalidInputError(f"{file_name}: has a 'note' column but no 'term' column; name the column "
                                "holding the terms 'term'.")
    else:
        term_col, note_col = 0, 1
        wide = next(((line, row) for line, row in records if len(row) > 2), None)
        if wide is not None:
            raise InvalidInputError(f"{file_name}: line {wide[0]} has {len(wide[1])} columns; without a "
                                    "header a CSV may only have a term and a note. Add a header row naming "
                                    "the 'term' (and 'note') column.")
    return [(row[term_col] if term_col < len(row) else "",
             row[note_col] if note_col is not None and note_col < len(row) else "",
             f"line {line} of {file_name}") for line, row in records]


def domain_packs() -> dict[str, Path]:
    """Shipped domain packs, name (file stem) → path."""
    return {path.stem: path for path in sorted(DOMAIN_PACKS_DIR.glob("*.csv"))}


def load_domain_pack(name: str) -> Vocabulary:
    packs = domain_packs()
    if name not in packs:
        known = ", ".join(packs) or "none"
        raise InvalidInputError(f"Unknown domain pack {name!r}; shipped packs: {known}.")
    return Vocabulary.load_terms_file(packs[name])
