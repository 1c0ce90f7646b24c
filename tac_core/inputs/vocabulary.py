"""The nouns TAC embeds: WordNet's noun synsets plus a user's domain terms, as one ordered list of names.

TAC draws its semantics from an external vocabulary (TAC_METHOD.md): the paper embeds one name per WordNet
noun synset. WordNet 3.0 has 82,115 noun synsets, but many share a display name ("bank", "crane"); collapsing
identical names (case- and space-insensitively, see :func:`normalize_term`) leaves 67,186 distinct names.
We encode each distinct name once: CLIP's text encoder would give the same vector for every copy, and
duplicates would only split one noun's softmax mass. A collapsed :class:`Term` keeps all its synset ids,
most frequent sense first (WordNet's sense number in the id, ``bank.n.01`` before ``bank.n.02``).

WordNet is read from ``tac_core/assets/wordnet_nouns.tsv.gz`` (built by ``scripts/build_wordnet_asset.py``), so no
WordNet install or download is needed at runtime. Domain terms ("solder bridge") come from the user or a
shipped pack in ``tac_core/assets/domain_packs/``; a domain term equal to a WordNet name merges into that term.
"""
from __future__ import annotations

import csv
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

from .. import atomic
from ..errors import EmptyInputError, InvalidInputError
from .wordnet import ASSETS_DIR, WordNetNouns, normalize_term, sense_number

DOMAIN_PACKS_DIR = ASSETS_DIR / "domain_packs"
FRAME_COLUMNS = ("name", "sources", "synset", "category", "gloss", "note")
SOURCES = ("wordnet", "domain")  # the order Term.sources is always kept in
MAX_TERM_LENGTH = 200


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
                group.sort(key=lambda r: (sense_number(wn.synsets[r]), r))
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
