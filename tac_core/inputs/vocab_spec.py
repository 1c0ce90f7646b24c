"""A saved vocabulary set: what a user chose on the vocabulary page, as JSON, and the :class:`Vocabulary` it means.

A spec is stored with ``Workspace.save_vocab_set(name, spec)`` and copied into every run's parameters, so a
run always knows exactly which terms it used even after the set is edited. Version 1::

    {
      "version": 1,
      "wordnet": true,                     # use WordNet's nouns at all
      "categories": ["noun.artifact"],     # WordNet lexicographer categories; [] = every category
      "subtrees": ["blemish.n.01"],        # keep only nouns under these synsets; [] = no restriction
      "disabled": ["bank"],                # terms switched off (matched case- and space-insensitively)
      "domain_terms": [{"term": "solder bridge", "note": "..."}],
      "domain_packs": ["surface_defects"], # shipped packs in tac_core/assets/domain_packs/
      "templates": "tac7"                  # prompt template set: tac7 (paper), tac3, photo1
    }

Every function here is pure: editing helpers return a new, validated spec, and :func:`validate_spec` says which
field is wrong in words a user can act on.
"""
from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional

from ..errors import EmptyInputError, InvalidInputError, TacError
from .prompts import DEFAULT_TEMPLATE_SET, TEMPLATE_SETS
from .vocabulary import (Vocabulary, WordNetNouns, domain_packs, load_domain_pack, normalize_term,
                         validated_term)

SPEC_VERSION = 1
DEFAULT_SET_NAME = "default"
FIELDS = ("version", "wordnet", "categories", "subtrees", "disabled", "domain_terms", "domain_packs", "templates")
MAX_DOMAIN_TERMS = 20_000

#: Rough cost of each template set, for the vocabulary page (encoding time grows with the template count).
TEMPLATE_NOTES = {
    "tac7": "7 prompts per term, as in the TAC paper: best quality, slowest to encode",
    "tac3": "3 of the paper's prompts: about 2.3x faster to encode, close in quality",
    "photo1": "1 prompt ('a photo of a ...'): 7x faster, for quick previews",
}


def default_spec() -> dict:
    """Every WordNet noun, no domain terms, the paper's prompt templates."""
    return {"version": SPEC_VERSION, "wordnet": True, "categories": [], "subtrees": [], "disabled": [],
            "domain_terms": [], "domain_packs": [], "templates": DEFAULT_TEMPLATE_SET}


def validate_spec(spec: object, wordnet: Optional[WordNetNouns] = None) -> dict:
    """A normalised copy of ``spec`` (missing fields take defaults), or :class:`InvalidInputError` naming the field."""
    if not isinstance(spec, dict):
        raise InvalidInputError(f"a vocabulary set must be a JSON object, not {type(spec).__name__}.")
    unknown = sorted(set(spec) - set(FIELDS))
    if unknown:
        raise InvalidInputError(f"the vocabulary set has unknown field(s) {unknown}; known fields: {', '.join(FIELDS)}.")
    out = default_spec()
    out.update(copy.deepcopy(spec))
    if out["version"] != SPEC_VERSION:
        raise InvalidInputError(f"the vocabulary set has version {out['version']!r}; this TAC Studio reads version "
                                f"{SPEC_VERSION}. Update TAC Studio or make the set again.")
    if not isinstance(out["wordnet"], bool):
        raise InvalidInputError(f"'wordnet' must be true or false, not {out['wordnet']!r}.")
    wn = wordnet or WordNetNouns.load()
    known = {name for name, _ in wn.categories()}
    out["categories"] = _string_list(out["categories"], "categories")
    bad = [c for c in out["categories"] if c not in known]
    if bad:
        raise InvalidInputError(f"unknown WordNet categor{'y' if len(bad) == 1 else 'ies'} {bad}; known: "
                                f"{', '.join(sorted(known))}.")
    out["subtrees"] = _string_list(out["subtrees"], "subtrees")
    for synset in out["subtrees"]:
        wn.row(synset)  # raises with a plain message
    out["disabled"] = _dedup(_string_list(out["disabled"], "disabled"))
    out["domain_terms"] = _domain_terms(out["domain_terms"])
    out["domain_packs"] = _string_list(out["domain_packs"], "domain_packs")
    packs = domain_packs()
    bad = [p for p in out["domain_packs"] if p not in packs]
    if bad:
        raise InvalidInputError(f"unknown domain pack(s) {bad}; shipped packs: {', '.join(packs) or 'none'}.")
    if out["templates"] not in TEMPLATE_SETS:
        raise InvalidInputError(f"unknown prompt template set {out['templates']!r}; choose one of "
                                f"{', '.join(TEMPLATE_SETS)}.")
    return out


def build_vocabulary(spec: dict, wordnet: Optional[WordNetNouns] = None) -> Vocabulary:
    """The terms a spec means, in order: WordNet (filtered), then pack terms, then the user's own terms,
    with switched-off terms removed. Raises :class:`EmptyInputError` when nothing is left."""
    spec = validate_spec(spec, wordnet)
    vocab = base_vocabulary(spec, wordnet)
    drop = switched_off(spec)
    kept = [term for term in vocab if term.key not in drop]
    if not kept:
        raise EmptyInputError("every term of this vocabulary set is switched off or filtered out; switch some "
                              "terms on, widen the WordNet filters or add domain terms.")
    return vocab if len(kept) == len(vocab) else Vocabulary(kept)


def base_vocabulary(spec: dict, wordnet: Optional[WordNetNouns] = None) -> Vocabulary:
    """The spec's terms *before* switching any off (what the on/off table lists). May be empty."""
    spec = validate_spec(spec, wordnet)
    vocab = Vocabulary()
    if spec["wordnet"]:
        try:
            vocab = Vocabulary.wordnet(categories=spec["categories"] or None, subtree=spec["subtrees"] or None,
                                       wordnet=wordnet)
        except EmptyInputError:
            vocab = Vocabulary()
    for pack in spec["domain_packs"]:
        vocab = vocab + load_domain_pack(pack)
    if spec["domain_terms"]:
        vocab = vocab + Vocabulary.from_terms([(t["term"], t["note"]) for t in spec["domain_terms"]])
    return vocab


def switched_off(spec: dict) -> set[str]:
    """The keys (:func:`normalize_term`) of the terms the spec switches off."""
    return {normalize_term(name) for name in spec["disabled"]}


# -- editing (each returns a new validated spec) -------------------------------------------------------
def add_domain_terms(spec: dict, items: Iterable[str | tuple[str, str]]) -> tuple[dict, int, list[str]]:
    """Append terms (strings or (term, note)); returns the spec, how many were new, and those already there."""
    spec = validate_spec(spec)
    have = {normalize_term(t["term"]) for t in spec["domain_terms"]}
    added, already, new_keys = 0, [], set()
    for number, item in enumerate(items, start=1):
        term, note = (item, "") if isinstance(item, str) else item
        term = validated_term(term, f"item {number}")
        key = normalize_term(term)
        if key in have:
            already.append(term)
            continue
        have.add(key)
        new_keys.add(key)
        spec["domain_terms"].append({"term": term, "note": " ".join(str(note or "").split())})
        added += 1
    spec["disabled"] = [d for d in spec["disabled"] if normalize_term(d) not in new_keys]  # added means wanted on
    return validate_spec(spec), added, already


def remove_domain_terms(spec: dict, names: Iterable[str]) -> dict:
    spec = validate_spec(spec)
    drop = {normalize_term(n) for n in names}
    spec["domain_terms"] = [t for t in spec["domain_terms"] if normalize_term(t["term"]) not in drop]
    return validate_spec(spec)


def set_enabled(spec: dict, names: Iterable[str], enabled: bool) -> dict:
    """Switch terms on or off (off: listed in ``disabled``)."""
    spec = validate_spec(spec)
    keys = {normalize_term(n): n for n in names}
    kept = [d for d in spec["disabled"] if normalize_term(d) not in keys]
    spec["disabled"] = kept if enabled else kept + list(keys.values())
    return validate_spec(spec)


def parse_term_list(text: str, where: str = "the pasted list") -> list[tuple[str, str]]:
    """One term per line; ``term, note`` or ``term<TAB>note`` gives a note; blank and ``#`` lines are ignored."""
    items = []
    for number, line in enumerate(str(text).split("\n"), start=1):
        stripped = line.strip().strip("\r")
        if not stripped or stripped.startswith("#"):
            continue
        sep = "\t" if "\t" in stripped else "," if "," in stripped else None
        term, note = (stripped.split(sep, 1) + [""])[:2] if sep else (stripped, "")
        items.append((validated_term(term, f"line {number} of {where}"), note.strip()))
    if not items:
        raise EmptyInputError(f"{where} holds no terms; write one term per line.")
    return items


def read_terms_file(name: str, data: bytes) -> list[tuple[str, str]]:
    """Terms from an uploaded .txt (one per line) or .csv (``term``, ``note`` columns); errors name ``name``."""
    suffix = Path(name).suffix.lower()
    if suffix not in (".txt", ".csv"):
        raise InvalidInputError(f"{name}: terms must come from a .txt file (one term per line) or a .csv file "
                                "(a 'term' column, optionally a 'note' column).")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload-{os.urandom(8).hex()}{suffix}"
        path.write_bytes(data)
        try:
            vocab = Vocabulary.load_terms_file(path)
        except TacError as exc:
            message = str(exc).replace(str(path), name)
            message = message.replace(path.name, name) if str(path) not in str(exc) else message
            raise type(exc)(message) from None
    return [(term.name, term.note) for term in vocab]


# -- sets in a workspace --------------------------------------------------------------------------------
def ensure_default_set(workspace) -> Optional[str]:
    """The most recently edited set's name; a workspace without sets gets :data:`DEFAULT_SET_NAME` first, when
    its user may change vocabulary sets (None otherwise: a viewer finds no set to show)."""
    sets = workspace.vocab_sets()
    if sets.empty:
        if not workspace.allows("vocabulary"):
            return None
        workspace.save_vocab_set(DEFAULT_SET_NAME, default_spec())
        return DEFAULT_SET_NAME
    return str(sets.sort_values("updated").iloc[-1]["name"])


def load_spec(workspace, name: str) -> dict:
    """A stored set, validated (an unreadable one raises with the set's name)."""
    try:
        return validate_spec(workspace.load_vocab_set(name))
    except InvalidInputError as exc:
        if "no vocabulary set named" in str(exc):
            raise
        raise InvalidInputError(f"the vocabulary set {name!r} cannot be used: {exc}") from None


def change_set(workspace, name: str, change: Callable[[dict], dict]) -> tuple[dict, Optional[int]]:
    """Apply ``change(spec) -> spec`` to the set as stored now (so an edit another session saved meanwhile is
    kept), validate it and save it when it differs; returns the spec and its new version (None: unchanged)."""
    stored = load_spec(workspace, name)
    new = validate_spec(change(stored))
    if new == stored:
        return stored, None
    return new, workspace.save_vocab_set(name, new)


def spec_summary(spec: dict) -> str:
    """One line describing a spec, for run lists and captions."""
    spec = validate_spec(spec)
    parts = []
    if spec["wordnet"]:
        scope = ", ".join(spec["categories"]) if spec["categories"] else "all categories"
        if spec["subtrees"]:
            scope += " under " + ", ".join(spec["subtrees"])
        parts.append(f"WordNet ({scope})")
    if spec["domain_packs"]:
        parts.append("packs: " + ", ".join(spec["domain_packs"]))
    if spec["domain_terms"]:
        parts.append(f"{len(spec['domain_terms'])} own term(s)")
    if spec["disabled"]:
        parts.append(f"{len(spec['disabled'])} off")
    return "; ".join(parts or ["no terms"]) + f"; templates {spec['templates']}"


# -- helpers --------------------------------------------------------------------------------------------
def _string_list(value: object, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInputError(f"{field!r} must be a list of texts, not {value!r:.80}.")
    return [v.strip() for v in value if v.strip()]


def _dedup(values: list[str]) -> list[str]:
    seen, out = set(), []
    for value in values:
        key = normalize_term(value)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _domain_terms(value: object) -> list[dict]:
    if not isinstance(value, list):
        raise InvalidInputError(f"'domain_terms' must be a list of {{'term', 'note'}} objects, not {value!r:.80}.")
    if len(value) > MAX_DOMAIN_TERMS:
        raise InvalidInputError(f"the vocabulary set has {len(value)} domain terms; at most {MAX_DOMAIN_TERMS} "
                                "are allowed. Use WordNet categories for broad vocabularies.")
    out, seen = [], set()
    for number, item in enumerate(value, start=1):
        if isinstance(item, str):
            item = {"term": item, "note": ""}
        if not isinstance(item, dict) or "term" not in item or set(item) - {"term", "note"}:
            raise InvalidInputError(f"domain term {number} must be an object with 'term' (and optionally 'note'), "
                                    f"not {item!r:.80}.")
        term = validated_term(item["term"], f"domain term {number}")
        note = item.get("note", "")
        if not isinstance(note, str):
            raise InvalidInputError(f"the note of domain term {number} ({term!r}) must be text, not {note!r:.40}.")
        key = normalize_term(term)
        if key not in seen:
            seen.add(key)
            out.append({"term": term, "note": " ".join(note.split())})
    return out
