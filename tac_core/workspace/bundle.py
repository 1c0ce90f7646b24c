"""Export bundle: a run's reviewed labels with everything a training pipeline and an auditor need, in one
folder or zip written atomically.

A bundle (``<workspace>/exports/bundle_run<id>_<UTC time>[_verified][.zip]``) holds:

- ``labels.csv``: the columns of the plain export (:data:`~tac_core.workspace.export.COLUMNS`), then
  ``source`` (the folder, upload or zip the file came from: ``"<source id>: <name>"``), ``duplicate_of`` and
  the metadata fields (as in the plain export; a duplicate file carries its own);
  one row per exported image *and* one per byte-identical duplicate file of it, which carries its original's
  label and the original's relative path in ``duplicate_of`` (empty for the originals), so every usable file
  the user added gets a label. Same encoding and formula-safe cells as the plain CSV.
- ``manifest.json`` (:mod:`tac_core.workspace.manifest`): code, run, model, vocabulary and review provenance,
  ``approvals`` (every cluster approved when the bundle was written, with approver, time and event id:
  :mod:`tac_core.workspace.sign_off`), what was selected, counts, the classes with their cluster ids (and
  folders), and ``files``: the sha256 of every file but the images.
- optionally ``images/<label>/<file>``, ``label_studio.json`` with ``label_studio_config.xml``, and
  ``coco.json`` (:mod:`tac_core.workspace.bundle_formats`).

Nothing in a bundle names a path of the server: files are named relative to their source, model files by
their file name. The bundle is built in a hidden ``.<name>.partial`` folder beside its destination, then
renamed into place (a folder) or zipped into a temporary file that is renamed into place (a zip), so a crash
leaves no half bundle under the final name.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .. import atomic
from .bundle_formats import (TREE_FOLDER, class_folders, coco_classification, label_studio_config,
                             label_studio_tasks, write_tree)
from .export import COLUMNS, csv_bytes, export_stem, label_table, metadata_columns, reserve_name
from .manifest import FORMAT, FORMAT_VERSION, MANIFEST_FILE, provenance, review_record
from .review import ReviewSession
from .sign_off import manifest_approvals
from .store import utc_now

BUNDLE_COLUMNS = (*COLUMNS, "source", "duplicate_of")
LABELS_FILE = "labels.csv"
LABEL_STUDIO_FILE, LABEL_STUDIO_CONFIG = "label_studio.json", "label_studio_config.xml"
COCO_FILE = "coco.json"
_COMPRESSED = (".csv", ".json", ".xml")  # deflated in a zip; images are compressed already


@dataclass(frozen=True)
class BundleOptions:
    """What a bundle holds besides ``labels.csv`` and the manifest, and which rows.

    ``clusters``: only these clusters' images (None: every cluster); ``verified_only``: only images verified
    themselves or through their cluster; ``approved_only``: only the images of clusters approved now.
    """

    verified_only: bool = False
    clusters: Optional[tuple[int, ...]] = None
    approved_only: bool = False
    folder_tree: bool = False
    label_studio: bool = False
    coco: bool = False
    as_zip: bool = False


@dataclass(frozen=True)
class BundleResult:
    """Where the bundle is (folder or zip), its manifest, and its row counts (duplicates included in rows)."""

    path: Path
    manifest: dict
    n_rows: int
    n_duplicates: int


def write_bundle(session: ReviewSession, options: BundleOptions = BundleOptions(),
                 dest_dir: Optional[str | os.PathLike] = None) -> BundleResult:
    """Write the bundle of ``session``'s run as it is reviewed now (other sessions' edits included) into
    ``dest_dir`` (default ``<workspace>/exports``), as the session's user (any member may export; the manifest
    names them and the activity log records the export)."""
    session.refresh()
    workspace, run_id, state = session.workspace, session.run_id, session.state
    user = workspace.require("export", session.user)
    history = session.history()
    table = label_table(state, workspace, run_id, options.verified_only, options.clusters, duplicates=True,
                        approved_only=options.approved_only)
    folder = Path(dest_dir) if dest_dir else workspace.exports_dir
    name, reservation = reserve_name(folder, export_stem("bundle", run_id, options.verified_only), ("", ".zip"))
    staging = folder / f".{name}.partial"
    try:
        staging.mkdir()
        manifest = _fill(staging, table, options, run_id)
        manifest.update(provenance(workspace, run_id), review=review_record(workspace, run_id, history,
                                                                            len(state.effective)),
                        approvals=manifest_approvals(state))
        manifest["counts"]["excluded"] = int(state.excluded.sum())
        manifest["exported_by"] = {"name": user.name, "email": user.email}
        atomic.write_json(staging / MANIFEST_FILE, manifest)
        if options.as_zip:
            final = folder / f"{name}.zip"
            _zip(staging, final)
            shutil.rmtree(staging)
        else:
            final = folder / name
            os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        reservation.unlink(missing_ok=True)
    n_duplicates = int((table["duplicate_of"] != "").sum())
    workspace.record("export", {"bundle": final.name, "rows": len(table), "verified_only": options.verified_only,
                                "approved_only": options.approved_only}, run_id=run_id, user=user)
    return BundleResult(final, manifest, len(table), n_duplicates)


def _fill(staging: Path, table, options: BundleOptions, run_id: int) -> dict:
    """Write the bundle's files into ``staging``; the manifest's selection, counts, classes and file hashes."""
    files: dict[str, str] = {}

    def write(name: str, data: bytes) -> None:
        atomic.write_bytes(staging / name, data)
        files[name] = hashlib.sha256(data).hexdigest()

    columns = [*BUNDLE_COLUMNS, *metadata_columns(table)]
    write(LABELS_FILE, csv_bytes(table, columns))
    originals = table[table["duplicate_of"] == ""].reset_index(drop=True)
    folders = class_folders(table["label"])
    refs, tree = list(originals["relative_path"]), None
    if options.folder_tree:
        written = write_tree(originals, staging, folders)
        refs = written.files
        tree = {"folder": TREE_FOLDER, "files": len(originals) - len(written.missing), "hard_linked": written.linked,
                "copied": written.copied, "missing": written.missing}
    if options.label_studio:
        write(LABEL_STUDIO_FILE, _json_bytes(label_studio_tasks(originals, refs, run_id)))
        write(LABEL_STUDIO_CONFIG, label_studio_config(table["label"]).encode("utf-8"))
    if options.coco:
        info = {"description": f"TAC Studio run {run_id} labels", "date_created": utc_now()}
        write(COCO_FILE, _json_bytes(coco_classification(originals, refs, info)))
    classes = [{"label": label, "cluster_ids": sorted(int(c) for c in group["cluster_id"].unique()),
                "images": int(len(group)), **({"folder": folders[label]} if tree else {})}
               for label, group in table.groupby("label", sort=True)]
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created": utc_now(),
        "selection": {"verified_only": bool(options.verified_only), "approved_only": bool(options.approved_only),
                      "clusters": None if options.clusters is None else sorted(int(c) for c in options.clusters)},
        "columns": columns,
        "counts": {"rows": len(table), "images": len(originals), "duplicates": len(table) - len(originals),
                   "clusters": int(table["cluster_id"].nunique()), "verified": int(table["verified"].sum())},
        "classes": classes, "tree": tree, "files": files,
    }


def _json_bytes(value) -> bytes:
    """Compact JSON (with an indent Python encodes 20 times slower: 50k tasks took 20 s)."""
    return (json.dumps(value, ensure_ascii=False) + "\n").encode("utf-8")


def _zip(folder: Path, dest: Path) -> None:
    """Every file under ``folder`` into the zip ``dest`` (paths relative to ``folder``), written atomically."""
    with atomic.atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            method = zipfile.ZIP_DEFLATED if path.suffix in _COMPRESSED else zipfile.ZIP_STORED
            archive.write(path, path.relative_to(folder).as_posix(), compress_type=method)
