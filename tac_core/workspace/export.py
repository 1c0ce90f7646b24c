"""Export: reviewed labels as a CSV that spreadsheets open safely, with a JSON manifest saying what it holds.

CSV columns: ``relative_path, sha256, cluster_id, label, verified, confidence, top_anchors, run_id``.

- One row per image of the run that is not excluded (excluded images are never exported). With
  ``verified_only``, only images verified themselves *or* members of a verified cluster; with ``approved_only``,
  only members of clusters approved now (:mod:`tac_core.workspace.sign_off`).
- ``relative_path`` is relative to the folder, upload or zip the image came from; ``sha256`` tells apart
  same-named files of two sources. Rows are sorted by cluster, then path.
- ``verified`` is ``true``/``false`` (itself or through its cluster); ``confidence`` has 4 decimals;
  ``top_anchors`` is the cluster's 3 best anchors, ``"crack (0.31); scratch (0.29); dent (0.27)"``.
- Formula injection: a text cell (path, label, anchors) starting with ``=``, ``+``, ``-``, ``@``, tab or
  carriage return gets a leading ``'`` so Excel, LibreOffice and Google Sheets show it as text instead of
  evaluating it (OWASP's advice; the quote is visible in other tools). Numeric cells are never changed.
- Encoding: UTF-8 with a byte-order mark and CRLF line ends (RFC 4180). Excel reads BOM-less UTF-8 as the
  ANSI code page and garbles non-English names; pandas (``encoding="utf-8-sig"``) and Python's csv read it.
- Files: ``<workspace>/exports/labels_run<id>_<UTC time>[_verified].csv`` and ``..._manifest.json``, each
  written atomically (temporary file, fsync, rename), the manifest last, so a manifest means a whole export.
  The name is reserved first (a hidden ``.<name>.reserved`` file created exclusively, removed after), so two
  sessions exporting the same run in the same second get ``…`` and ``…-2``, never one file for both.

The rows come from :func:`label_table`, which the export bundle (:mod:`tac_core.workspace.bundle`) shares:
it adds a ``source`` column, a row per duplicate file and a restriction to chosen clusters. The manifest lists
the approvals in effect (``approvals``: cluster, label, approver, e-mail, time, event id) whatever was chosen.

:func:`history_csv` writes a run's review history (:func:`~tac_core.workspace.review_log.events_table`) with the
same encoding and formula-safe cells.

Metadata fields (:mod:`tac_core.workspace.metadata`: line, camera, ...) follow the columns above, one column
per field by name (:func:`metadata_columns`), empty where an image has no value; they are text cells, made
safe like the others. Images an intake added to the review are exported like the run's own.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import pandas as pd

import tac_core

from .. import atomic
from ..errors import InvalidInputError
from .metadata import metadata_table
from .review import ReviewSession, ReviewState
from .sign_off import manifest_approvals
from .store import utc_now
from .workspace import Workspace

COLUMNS = ("relative_path", "sha256", "cluster_id", "label", "verified", "confidence", "top_anchors", "run_id")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
EXPORT_ANCHORS = 3
LOCAL_DIR = "local-dir:"  # tac_core.embedding.models names local model folders so
TEXT_COLUMNS = frozenset({"relative_path", "label", "top_anchors", "source", "duplicate_of"})
TABLE_COLUMNS = (*COLUMNS, "source", "duplicate_of", "image_id", "path", "width", "height")
SKIPPED_COLUMNS = {"rel_path": "file", "status": "status", "reason": "reason", "source_id": "source", "path": "path"}


@dataclass(frozen=True)
class ExportResult:
    """Where the export was written, how many rows it has, and the CSV bytes for a download button."""

    csv_path: Path
    manifest_path: Path
    n_rows: int
    csv_bytes: bytes
    manifest: dict


def neutralise(text: str) -> str:
    """Text a spreadsheet would read as a formula, made inert with a leading quote."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def review_state(session_or_state: Union[ReviewSession, ReviewState]) -> ReviewState:
    """The state to export: a :class:`ReviewSession` is refreshed first, so edits other sessions made count too."""
    if isinstance(session_or_state, ReviewSession):
        session_or_state.refresh()
        return session_or_state.state
    return session_or_state


def label_table(state: ReviewState, workspace: Workspace, run_id: int, verified_only: bool = False,
                clusters: Optional[Iterable[int]] = None, duplicates: bool = False,
                approved_only: bool = False) -> pd.DataFrame:
    """The rows an export holds, in file order (cluster, then path), with raw text (not yet made safe).

    Columns: those of :data:`COLUMNS` (``verified`` a bool, ``confidence`` a float), then ``source`` (see
    :func:`source_names`), ``duplicate_of`` (the original's relative path for a duplicate's row, else ""),
    and for writers of other formats ``image_id``, ``path`` (where the file is on this machine: never
    written), ``width`` and ``height``. ``clusters`` keeps only those clusters' images; ``duplicates`` adds a
    row for every byte-identical duplicate file of an exported image, carrying its original's label;
    ``approved_only`` keeps only the images of clusters approved now.
    """
    assignments = workspace.run_assignments(run_id)
    if not np.array_equal(assignments["image_id"].to_numpy(), state.image_ids[:state.n_run]):
        raise InvalidInputError(f"the review given is not of run {run_id}; export the run that is being reviewed.")
    verified = state.counts_as_verified()
    keep = ~state.excluded & (verified if verified_only else True)
    if clusters is not None:
        keep &= np.isin(state.labels, list(clusters))
    if approved_only:
        keep &= np.isin(state.labels, list(state.sign_offs.approved))
    pos = np.flatnonzero(keep)
    images = workspace.images().set_index("id")
    labels = state.labels[pos]
    rows = images.loc[state.image_ids[pos]]  # intake images come after the run's own
    frame = pd.DataFrame({
        "relative_path": rows["rel_path"].to_numpy(), "sha256": rows["sha256"].to_numpy(),
        "cluster_id": labels, "label": [state.names[c] for c in labels], "verified": verified[pos],
        "confidence": state.confidence[pos], "image_id": state.image_ids[pos], "duplicate_of": ""})
    if duplicates:
        copies = images[(images["status"] == "duplicate") & images["duplicate_of"].isin(frame["image_id"])]
        original = frame.set_index("image_id").loc[copies["duplicate_of"].to_numpy("int64")]
        frame = pd.concat([frame, original.reset_index(drop=True).assign(
            relative_path=copies["rel_path"].to_numpy(), image_id=copies.index.to_numpy(),
            duplicate_of=original["relative_path"].to_numpy())], ignore_index=True)
    ordered = images.loc[frame["image_id"].to_numpy()]
    anchors = {c: "; ".join(f"{term} ({score:.2f})" for term, score in state.anchors(c)[:EXPORT_ANCHORS])
               for c in state.names}
    frame = frame.assign(top_anchors=[anchors[c] for c in frame["cluster_id"]], run_id=run_id,
                         source=ordered["source_id"].map(source_names(workspace)).to_numpy(),
                         path=ordered["path"].to_numpy(), width=ordered["width"].to_numpy(),
                         height=ordered["height"].to_numpy())
    frame = frame.sort_values(["cluster_id", "relative_path"], kind="stable", ignore_index=True)
    metadata = metadata_table(workspace, frame["image_id"].to_numpy())
    return pd.concat([frame[list(TABLE_COLUMNS)], metadata.reset_index(drop=True)], axis=1)


def metadata_columns(table: pd.DataFrame) -> list[str]:
    """The metadata fields of a :func:`label_table` (the columns after its own)."""
    return [c for c in table.columns if c not in TABLE_COLUMNS]


def source_names(workspace: Workspace) -> dict[int, str]:
    """Per source id, how an export names it: ``"<id>: <name>"``, the name being the folder's own name for a
    folder added by path (:func:`file_name`), else the upload as the app describes it (``parts.zip``)."""
    names = {}
    for source in workspace.sources().itertuples(index=False):
        names[int(source.id)] = f"{source.id}: {file_name(source.location)}"
    return names


def file_name(text: Optional[str]) -> Optional[str]:
    """Text that may be a path (a source's location, a model file) as an export shows it: a path reduced to its
    last part, so no export names a folder of the server; ``local-dir:`` model names keep their prefix."""
    if not text:
        return text
    prefix = LOCAL_DIR if text.startswith(LOCAL_DIR) else ""
    rest = text[len(prefix):]
    if "/" in rest or "\\" in rest:
        rest = PurePosixPath(rest.replace("\\", "/")).name
    return prefix + rest


def csv_bytes(table: pd.DataFrame, columns: Sequence[str] = COLUMNS) -> bytes:
    """``table``'s ``columns`` as the export's CSV: UTF-8 with BOM, CRLF, each text cell through :func:`neutralise`."""
    cells = {name: table[name] for name in columns}
    for name in (set(columns) & TEXT_COLUMNS) | (set(columns) - set(TABLE_COLUMNS)):  # metadata is text too
        cells[name] = table[name].map(neutralise)
    if "verified" in cells:
        cells["verified"] = np.where(table["verified"].to_numpy(bool), "true", "false")
    if "confidence" in cells:
        cells["confidence"] = np.char.mod("%.4f", table["confidence"].to_numpy(np.float64))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(zip(*(np.asarray(cells[name]).tolist() for name in columns)))
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def export_labels(session_or_state: Union[ReviewSession, ReviewState], workspace: Workspace, run_id: int,
                  verified_only: bool = False, dest_dir: Optional[str | os.PathLike] = None,
                  record: bool = True, approved_only: bool = False) -> ExportResult:
    """Write the labels CSV and its manifest into ``dest_dir`` (default ``<workspace>/exports``); any member may.

    A :class:`ReviewSession` is refreshed first, so edits other sessions made are exported too. The manifest
    names who exported and lists the approvals; ``record`` adds the export to the activity log (a preview
    passes False); ``approved_only`` keeps only the images of approved clusters.
    """
    user = workspace.require("export")
    state = review_state(session_or_state)
    run = workspace.run(run_id)
    table = label_table(state, workspace, run_id, verified_only, approved_only=approved_only)
    columns = [*COLUMNS, *metadata_columns(table)]
    data = csv_bytes(table, columns)
    csv_path, manifest_path, reservation = _destination(Path(dest_dir) if dest_dir else workspace.exports_dir,
                                                        run_id, verified_only)
    manifest = {
        "run_id": run_id, "run_parameters": run["params"], "workspace": workspace.name,
        "verified_only": bool(verified_only), "approved_only": bool(approved_only), "columns": columns,
        "counts": {"rows": len(table), "clusters": int(table["cluster_id"].nunique()),
                   "verified": int(table["verified"].sum()), "excluded": int(state.excluded.sum())},
        "edit_count": len(state.effective), "approvals": manifest_approvals(state), "created": utc_now(),
        "exported_by": {"name": user.name, "email": user.email},
        "tac_core_version": tac_core.__version__,
        "csv_file": csv_path.name, "csv_sha256": hashlib.sha256(data).hexdigest(),
    }
    try:
        atomic.write_bytes(csv_path, data)
        atomic.write_json(manifest_path, manifest)
    finally:
        reservation.unlink(missing_ok=True)
    if record:
        workspace.record("export", {"file": csv_path.name, "rows": len(table), "verified_only": bool(verified_only),
                                    "approved_only": bool(approved_only)}, run_id=run_id)
    return ExportResult(csv_path, manifest_path, len(table), data, manifest)


def list_exports(workspace: Workspace) -> list[dict]:
    """The manifests of the workspace's exports, newest first (by file name: run, then UTC time); a manifest
    that cannot be read (being written, damaged) is left out."""
    manifests = []
    for path in sorted(workspace.exports_dir.glob("*_manifest.json"), reverse=True):
        try:
            manifests.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return manifests


def skipped_files(workspace: Workspace) -> pd.DataFrame:
    """The files the workspace does not use (skipped and duplicates): file, status, reason, source, path."""
    return workspace.skipped_images()[list(SKIPPED_COLUMNS)].rename(columns=SKIPPED_COLUMNS)


def skipped_files_csv(skipped: pd.DataFrame) -> bytes:
    """:func:`skipped_files` as a CSV a spreadsheet opens safely (UTF-8 with BOM, text cells neutralised)."""
    text_columns = [c for c in ("file", "reason", "path") if c in skipped.columns]
    safe = skipped.assign(**{c: skipped[c].astype(str).map(neutralise) for c in text_columns})
    return safe.to_csv(index=False).encode("utf-8-sig")


def history_csv(table: pd.DataFrame) -> bytes:
    """A review history table as CSV like the labels' (UTF-8 with BOM, CRLF), every text cell through
    :func:`neutralise` (user names, cluster lists and descriptions are typed by people), booleans ``true``/``false``."""
    def cell(value):
        if isinstance(value, (bool, np.bool_)):
            return "true" if value else "false"
        return neutralise(value) if isinstance(value, str) else value

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(table.columns)
    writer.writerows([cell(value) for value in row] for row in table.itertuples(index=False, name=None))
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def _destination(folder: Path, run_id: int, verified_only: bool) -> tuple[Path, Path, Path]:
    """A CSV path and its manifest path that do not exist yet, and the file reserving them (:func:`reserve_name`)."""
    name, reservation = reserve_name(folder, export_stem("labels", run_id, verified_only), (".csv", "_manifest.json"))
    return folder / f"{name}.csv", folder / f"{name}_manifest.json", reservation


def export_stem(kind: str, run_id: int, verified_only: bool) -> str:
    """``<kind>_run<id>_<UTC time>[_verified]``: exports sort by run, then time."""
    return f"{kind}_run{run_id}_{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}{'_verified' if verified_only else ''}"


def reserve_name(folder: Path, stem: str, suffixes: Sequence[str]) -> tuple[str, Path]:
    """A name (``stem``, else ``stem-2``, ...) for which no ``folder/<name><suffix>`` exists yet, and the hidden
    file reserving it (created exclusively: remove it once the export is written), so two sessions exporting in
    the same second never share a name."""
    folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        name = stem if attempt == 1 else f"{stem}-{attempt}"
        if any((folder / f"{name}{suffix}").exists() for suffix in suffixes):
            continue
        reservation = folder / f".{name}.reserved"
        try:
            os.close(os.open(reservation, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        return name, reservation
    raise InvalidInputError(f"{folder} already holds 999 exports named {stem}; try again in a second.")
