"""Image metadata (line, camera, shift, date, part, ...): read from paths with a pattern, or joined from a CSV,
stored in the workspace (``image_metadata``: one row per image and field, text values).

- :func:`preview_pattern` shows what a pattern (:class:`~tac_core.inputs.path_pattern.PathPattern`) reads from
  a few paths before :func:`apply_pattern` stores it for every image it fits. The pattern is kept
  (``metadata_sources``), and images added later get their fields from it at once (:func:`apply_saved_pattern`).
- :func:`join_csv` reads a CSV with a ``relative_path`` (as the Images page lists it) or ``file_name`` column,
  optionally ``source`` (the source id, for paths two sources share), and any other columns as fields.
- Changing metadata needs the ``reviewer`` role (action ``metadata``, checked in the write transaction) and
  is recorded in the activity log.
- Bad input changes nothing and says why: a pattern that fits no image, a CSV row naming no image or naming
  one twice, a file name several images share, a field named like a built-in column (:data:`BUILT_IN`),
  a value with a control character. Applying a field again replaces its values for the images it names.
"""
from __future__ import annotations

import csv
import io
import json
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from ..errors import InvalidInputError
from ..inputs.path_pattern import PathPattern
from .store import utc_now
from .workspace import Workspace

#: Column names of the Images table, the review and the exports: no metadata field may take one (any case).
BUILT_IN = frozenset({"relative_path", "sha256", "cluster_id", "label", "verified", "confidence", "top_anchors",
                      "run_id", "source", "duplicate_of", "image_id", "path", "width", "height", "id", "source_id",
                      "source_kind", "rel_path", "size_bytes", "status", "reason", "cluster", "position", "excluded",
                      "new", "novelty", "novel", "index", "file_name"})
KEY_COLUMNS = ("relative_path", "file_name")
MAX_FIELD_LENGTH = 64
MAX_VALUE_LENGTH = 200
MAX_FIELDS = 50
PREVIEW_ROWS = 8


@dataclass(frozen=True)
class MetadataResult:
    """What an apply or join stored: the fields, how many images got values, and how many it did not fit."""

    fields: tuple[str, ...]
    images: int
    unmatched: int = 0

    def summary(self) -> str:
        text = f"{', '.join(self.fields)} for {self.images:,} image(s)"
        return text + (f"; {self.unmatched:,} image(s) did not fit the pattern" if self.unmatched else "")


@dataclass(frozen=True)
class PatternPreview:
    """A pattern tried on every image: how many it fits, and a few paths with what it reads (blank: no fit)."""

    fields: tuple[str, ...]
    matched: int
    total: int
    rows: pd.DataFrame


def field_name(name: object, what: str = "column") -> str:
    """A usable field name, or :class:`InvalidInputError` naming the problem."""
    text = str(name).strip() if isinstance(name, str) else ""
    if not text:
        raise InvalidInputError(f"a {what} has no name; give every metadata column a header.")
    if len(text) > MAX_FIELD_LENGTH or any(unicodedata.category(c) in ("Cc", "Cs") for c in text):
        raise InvalidInputError(f"the {what} name {text[:40]!r} is too long or holds a control character; use a short "
                                "plain name.")
    if text.casefold() in BUILT_IN:
        raise InvalidInputError(f"the {what} {text!r} is named like a built-in column of TAC Studio ("
                                f"{text.casefold()}); rename it, e.g. {text + '_code'!r}.")
    return text


def preview_pattern(workspace: Workspace, text: str, limit: int = PREVIEW_ROWS) -> PatternPreview:
    """What ``text`` reads from the workspace's images: counts, and ``limit`` paths (fitted ones first)."""
    pattern = _pattern(text)
    images = workspace.images()
    found = [pattern.match(rel) for rel in images["rel_path"]]
    fits = [i for i, f in enumerate(found) if f is not None]
    misses = [i for i, f in enumerate(found) if f is None]
    shown = fits[:max(limit - min(2, len(misses)), 0)] + misses
    shown = shown[:limit]
    rows = pd.DataFrame([{"relative_path": images["rel_path"].iloc[i], **(found[i] or dict.fromkeys(pattern.fields, ""))}
                         for i in shown], columns=["relative_path", *pattern.fields])
    return PatternPreview(pattern.fields, len(fits), len(images), rows)


def apply_pattern(workspace: Workspace, text: str) -> MetadataResult:
    """Store the fields ``text`` reads for every image it fits, and keep the pattern for later images."""
    pattern = _pattern(text)
    images = workspace.images()
    if images.empty:
        raise InvalidInputError("the workspace has no images yet; add images before reading metadata from paths.")
    found = {int(i): f for i, rel in zip(images["id"], images["rel_path"]) if (f := pattern.match(rel)) is not None}
    if not found:
        raise InvalidInputError(f"the pattern {pattern.text!r} fits none of the {len(images):,} image paths, e.g. "
                                f"{images['rel_path'].iloc[0]!r}; nothing was changed. Check the preview.")
    values = {image_id: {k: _value(v, f"the path of image {image_id}") for k, v in fields.items()}
              for image_id, fields in found.items()}
    _store(workspace, values, "pattern", pattern.text, pattern.fields, record=True)
    return MetadataResult(pattern.fields, len(found), len(images) - len(found))


def apply_saved_pattern(workspace: Workspace, image_ids: Iterable[int]) -> int:
    """Give images added later the fields of the last pattern applied (those it fits); returns how many."""
    row = workspace.connection().execute(
        "SELECT description FROM metadata_sources WHERE kind = 'pattern' ORDER BY id DESC LIMIT 1").fetchone()
    ids = [int(i) for i in image_ids]
    if row is None or not ids:
        return 0
    pattern = PathPattern.parse(row[0])
    images = workspace.images().set_index("id").loc[ids]
    values = {}
    for image_id, rel in zip(images.index, images["rel_path"]):
        found = pattern.match(rel)
        if found is not None and all(_printable(v) for v in found.values()):
            values[int(image_id)] = {k: v.strip() for k, v in found.items() if v.strip()}
    if values:
        _store(workspace, values, "pattern", pattern.text, pattern.fields, record=False)
    return len(values)


def join_csv(workspace: Workspace, name: str, data: bytes) -> MetadataResult:
    """Join a CSV's columns to the images its ``relative_path`` or ``file_name`` column names (module docstring)."""
    header, rows = _read_csv(name, data)
    lower = [h.casefold() for h in header]
    key = next((k for k in KEY_COLUMNS if k in lower), None)
    if key is None:
        raise InvalidInputError(f"{name} has no relative_path or file_name column; name the images in one of them "
                                f"(its columns: {', '.join(header[:8])}).")
    key_at, source_at = lower.index(key), lower.index("source") if "source" in lower else None
    fields = [(i, field_name(h)) for i, h in enumerate(header) if i not in (key_at, source_at)]
    if not fields:
        raise InvalidInputError(f"{name} has no column besides {header[key_at]!r}; add the metadata columns.")
    if len({f.casefold() for _, f in fields}) != len(fields) or len(fields) > MAX_FIELDS:
        raise InvalidInputError(f"{name} repeats a column name or has more than {MAX_FIELDS} columns; give each "
                                "column once.")
    lookup = _image_lookup(workspace.images(), key, source_at is not None)
    values, seen, unknown = {}, {}, []
    for number, row in enumerate(rows, start=2):
        cells = row + [""] * (len(header) - len(row))
        path = _clean_path(cells[key_at]) if key == "relative_path" else PurePosixPath(_clean_path(cells[key_at])).name
        lookup_key = (path, cells[source_at].split(":")[0].strip()) if source_at is not None else path
        matches = lookup.get(lookup_key, [])
        if not matches:
            unknown.append((number, cells[key_at]))
            continue
        if len(matches) > 1:
            raise InvalidInputError(f"row {number} of {name}: {cells[key_at]!r} names {len(matches)} images "
                                    f"({', '.join(m[1] for m in matches[:3])}); add a relative_path"
                                    f"{'' if source_at is not None else ' (and a source)'} column that tells them "
                                    "apart. Nothing was changed.")
        image_id = matches[0][0]
        if image_id in seen:
            raise InvalidInputError(f"rows {seen[image_id]} and {number} of {name} both name {cells[key_at]!r}; keep one "
                                    "row per image. Nothing was changed.")
        seen[image_id] = number
        values[image_id] = {f: _value(cells[i], f"row {number} of {name}") for i, f in fields if cells[i].strip()}
    if unknown:
        shown = "; ".join(f"row {n}: {p!r}" for n, p in unknown[:3])
        raise InvalidInputError(f"{len(unknown)} row(s) of {name} name no image of this workspace ({shown}); fix or "
                                "remove them. Nothing was changed.")
    _store(workspace, values, "csv", name, tuple(f for _, f in fields), record=True)
    return MetadataResult(tuple(f for _, f in fields), len(values))


def metadata_table(workspace: Workspace, image_ids: Optional[np.ndarray] = None) -> pd.DataFrame:
    """Fields as columns (sorted by name), one row per image id (all ``image_ids`` given, else every image with
    metadata); a missing value is ""."""
    frame = pd.DataFrame(workspace.connection().execute(
        "SELECT image_id, field, value FROM image_metadata").fetchall(), columns=["image_id", "field", "value"])
    wide = frame.pivot(index="image_id", columns="field", values="value") if len(frame) else pd.DataFrame()
    wide = wide.reindex(columns=sorted(wide.columns, key=str.casefold))
    if image_ids is not None:
        wide = wide.reindex(np.asarray(image_ids, np.int64))
    wide.columns.name = None
    return wide.fillna("").rename_axis("image_id")


def metadata_version(workspace: Workspace) -> tuple:
    """A fingerprint that changes whenever the metadata does (the last source applied, the number of values and
    a sum over them), for front ends to key their caches on."""
    conn = workspace.connection()
    last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM metadata_sources").fetchone()[0]
    count, total = conn.execute("SELECT COUNT(*), TOTAL(image_id * LENGTH(field || value)) FROM image_metadata"
                                ).fetchone()
    return int(last), int(count), float(total)


def metadata_fields(workspace: Workspace) -> pd.DataFrame:
    """Every field with the number of images that have it and of distinct values, by name."""
    frame = pd.DataFrame(workspace.connection().execute(
        "SELECT field, COUNT(*), COUNT(DISTINCT value) FROM image_metadata GROUP BY field").fetchall(),
        columns=["field", "images", "values"])
    return frame.sort_values("field", key=lambda s: s.str.casefold(), ignore_index=True)


def remove_field(workspace: Workspace, field: str) -> int:
    """Delete a field from every image; returns how many values went."""
    with workspace.transaction() as conn:
        workspace.require("metadata", conn=conn)
        removed = conn.execute("DELETE FROM image_metadata WHERE field = ?", (str(field),)).rowcount
        workspace.record("metadata removed", {"field": str(field), "values": removed}, conn=conn)
    return removed


def metadata_sources(workspace: Workspace) -> pd.DataFrame:
    """What was applied, oldest first: kind (pattern, csv), description (the pattern, the file name), fields,
    images, when."""
    rows = workspace.connection().execute(
        "SELECT kind, description, fields, images, added FROM metadata_sources ORDER BY id").fetchall()
    return pd.DataFrame([(k, d, ", ".join(json.loads(f)), n, a) for k, d, f, n, a in rows],
                        columns=["kind", "description", "fields", "images", "added"])


def _pattern(text: str) -> PathPattern:
    pattern = PathPattern.parse(text)
    for name in pattern.fields:
        field_name(name, "field")
    return pattern


def _store(workspace: Workspace, values: dict[int, dict[str, str]], kind: str, description: str,
           fields: tuple[str, ...], record: bool) -> None:
    """Write the values in one transaction; ``record``: a user's own change (checked, kept as a source and in
    the activity log), else the saved pattern applied to an add the caller checked."""
    rows = [(image_id, f, v) for image_id, fields_of in values.items() for f, v in fields_of.items()]
    with workspace.transaction() as conn:
        if record:
            workspace.require("metadata", conn=conn)
        conn.executemany("INSERT INTO image_metadata (image_id, field, value) VALUES (?, ?, ?) ON CONFLICT "
                         "(image_id, field) DO UPDATE SET value = excluded.value", rows)
        if record:
            conn.execute("INSERT INTO metadata_sources (kind, description, fields, images, added) VALUES (?, ?, ?, ?, "
                         "?)", (kind, description, json.dumps(list(fields)), len(values), utc_now()))
            workspace.record("metadata", {"kind": kind, "source": description, "fields": list(fields),
                                          "images": len(values)}, conn=conn)


def _read_csv(name: str, data: bytes) -> tuple[list[str], list[list[str]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{name} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as CSV UTF-8."
                                ) from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = [row for row in csv.reader(io.StringIO(text), dialect) if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise InvalidInputError(f"{name} has no rows under its header; give one row per image.")
    header = [cell.strip() for cell in rows[0]]
    return header, [[cell.strip() for cell in row] for row in rows[1:]]


def _image_lookup(images: pd.DataFrame, key: str, by_source: bool) -> dict:
    lookup: dict = {}
    for image_id, rel, source in zip(images["id"], images["rel_path"], images["source_id"]):
        path = rel if key == "relative_path" else PurePosixPath(rel).name
        lookup.setdefault((path, str(source)) if by_source else path, []).append((int(image_id), rel))
    return lookup


def _clean_path(text: str) -> str:
    path = text.strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path.lstrip("/")


def _printable(value: str) -> bool:
    return len(value) <= MAX_VALUE_LENGTH and not any(unicodedata.category(c) in ("Cc", "Cs") for c in value)


def _value(value: str, where: str) -> str:
    text = value.strip()
    if not _printable(text):
        raise InvalidInputError(f"{where} holds a value that is longer than {MAX_VALUE_LENGTH} characters or has a "
                                "control character; fix it. Nothing was changed.")
    return text
