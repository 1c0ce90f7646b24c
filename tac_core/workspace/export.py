"""Export: reviewed labels as a CSV that spreadsheets open safely, with a JSON manifest saying what it holds.

CSV columns: ``relative_path, sha256, cluster_id, label, verified, confidence, top_anchors, run_id``.

- One row per image of the run that is not excluded (excluded images are never exported). With
  ``verified_only``, only images verified themselves *or* members of a verified cluster.
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
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

import tac_core

from .. import atomic
from ..errors import InvalidInputError
from .review import ReviewSession, ReviewState
from .store import utc_now
from .workspace import Workspace

COLUMNS = ("relative_path", "sha256", "cluster_id", "label", "verified", "confidence", "top_anchors", "run_id")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
EXPORT_ANCHORS = 3
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


def export_labels(session_or_state: Union[ReviewSession, ReviewState], workspace: Workspace, run_id: int,
                  verified_only: bool = False, dest_dir: Optional[str | os.PathLike] = None,
                  record: bool = True) -> ExportResult:
    """Write the labels CSV and its manifest into ``dest_dir`` (default ``<workspace>/exports``); any member may.

    A :class:`ReviewSession` is refreshed first, so edits other sessions made are exported too. The manifest
    names who exported; ``record`` adds the export to the activity log (a preview passes False).
    """
    user = workspace.require("export")
    if isinstance(session_or_state, ReviewSession):
        session_or_state.refresh()
        state = session_or_state.state
    else:
        state = session_or_state
    run = workspace.run(run_id)
    assignments = workspace.run_assignments(run_id)
    if not np.array_equal(assignments["image_id"].to_numpy(), state.image_ids):
        raise InvalidInputError(f"the review given is not of run {run_id}; export the run that is being reviewed.")
    verified = state.counts_as_verified()
    keep = ~state.excluded & (verified if verified_only else True)
    rel_paths = assignments["rel_path"].to_numpy()
    positions = [p for _, _, p in sorted(zip(state.labels[keep].tolist(), rel_paths[keep], np.flatnonzero(keep)))]
    label_text = {c: neutralise(name) for c, name in state.names.items()}
    anchor_text = {c: neutralise("; ".join(f"{term} ({score:.2f})" for term, score in
                                           state.anchors(c)[:EXPORT_ANCHORS])) for c in state.names}
    sha256 = assignments["sha256"].to_numpy()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for p in positions:
        cluster = int(state.labels[p])
        writer.writerow((neutralise(rel_paths[p]), sha256[p], cluster, label_text[cluster],
                         "true" if verified[p] else "false", f"{state.confidence[p]:.4f}", anchor_text[cluster],
                         run_id))
    csv_bytes = ("\ufeff" + buffer.getvalue()).encode("utf-8")
    csv_path, manifest_path, reservation = _destination(Path(dest_dir) if dest_dir else workspace.exports_dir,
                                                        run_id, verified_only)
    manifest = {
        "run_id": run_id, "run_parameters": run["params"], "workspace": workspace.name,
        "verified_only": bool(verified_only), "columns": list(COLUMNS),
        "counts": {"rows": len(positions), "clusters": len({int(state.labels[p]) for p in positions}),
                   "verified": int(verified[positions].sum()), "excluded": int(state.excluded.sum())},
        "edit_count": len(state.effective), "created": utc_now(),
        "exported_by": {"name": user.name, "email": user.email},
        "tac_core_version": tac_core.__version__,
        "csv_file": csv_path.name, "csv_sha256": hashlib.sha256(csv_bytes).hexdigest(),
    }
    try:
        atomic.write_bytes(csv_path, csv_bytes)
        atomic.write_json(manifest_path, manifest)
    finally:
        reservation.unlink(missing_ok=True)
    if record:
        workspace.record("export", {"file": csv_path.name, "rows": len(positions),
                                    "verified_only": bool(verified_only)}, run_id=run_id)
    return ExportResult(csv_path, manifest_path, len(positions), csv_bytes, manifest)


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


def _destination(folder: Path, run_id: int, verified_only: bool) -> tuple[Path, Path, Path]:
    """A CSV path and its manifest path, named by run and UTC time, that do not exist yet, and the hidden file
    reserving the name (created exclusively), so two sessions exporting in the same second never share a name."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"labels_run{run_id}_{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}{'_verified' if verified_only else ''}"
    for attempt in range(1, 1000):
        name = stem if attempt == 1 else f"{stem}-{attempt}"
        csv_path, manifest_path = folder / f"{name}.csv", folder / f"{name}_manifest.json"
        if csv_path.exists() or manifest_path.exists():
            continue
        reservation = folder / f".{name}.reserved"
        try:
            os.close(os.open(reservation, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        return csv_path, manifest_path, reservation
    raise InvalidInputError(f"{folder} already holds 999 exports of run {run_id} from this second; try again.")
