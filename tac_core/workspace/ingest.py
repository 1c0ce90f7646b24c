"""Images into a workspace: a folder on this machine, uploaded files, an uploaded folder, or a zip.

Each add is one *source* of the workspace (``Workspace.add_image_set``, one transaction), so a crash or a
cancel never leaves half an add listed. What the app stores:

- **A folder on this machine** (source kind ``"path"``): scanned where it is, nothing is copied; workspace
  admins only (checked before the path is even looked at, so nobody else learns what exists on the server).
  The server may restrict which folders can be named with ``TAC_STUDIO_ALLOWED_ROOTS`` (folders separated by
  ``os.pathsep``, ``:`` on Linux/macOS, ``;`` on Windows); unset, any readable folder is allowed on a local
  TAC Studio, and none when it is served to other machines (users sign in: ``TAC_STUDIO_AUTH`` is ``proxy``
  or ``oidc``).
- **Uploads** (kinds ``"upload"``, ``"folder"`` for a whole uploaded folder, ``"zip"`` when every upload is a
  zip; reviewers and up, checked before anything is written): written under ``files/<upload id>/`` keeping each file's relative path, sanitised with the rules of
  :func:`tac_core.inputs.zips.extract_zip_safely` (no ``..``, no absolute paths, no hidden/system junk, names
  valid on every OS), so no name can reach outside the workspace. Zips are extracted with
  ``extract_zip_safely``. Files are first written to a hidden staging folder that is renamed into place when
  complete, and only the transaction that stores the source makes them images, so an upload killed half-way
  never counts half-copied files; what such a crash leaves behind is removed by an upload a day later.
  An uploaded folder's own name is dropped from the relative paths, so they match what adding the
  same folder by path gives.
- **Metadata**: the images of an add get their fields from the last path pattern applied
  (:func:`tac_core.workspace.metadata.apply_saved_pattern`), so each new batch is described like the first.
- **Thumbnails** are made once, right after the add, as ``thumbs/<sha256>.jpg`` with the embedding
  pipeline's own writer (:func:`tac_core.embedding.image_encoding.thumbnail_path`), so embedding never redoes them.

Files refused before scanning (a bad name, a zip member that is a link, ...) are stored as skipped records
with their reason, next to the scan's own skipped files and duplicates, so the skipped list is complete.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterable, Optional, Sequence, Union

from ..errors import EmptyInputError, InvalidInputError
from ..inputs.image_decode import ImageDecodeError, open_image_rgb
from ..inputs.thumbnails import thumbnail_path, write_thumbnail  # the embedder's writer: identical thumbnails
from ..inputs.imageset import ImageRecord, ImageSet, is_hidden_or_system, scan_folder
from ..inputs.zips import extract_zip_safely, safe_component
from ..progress import CancelToken, ProgressFn, check_cancel, report
from .access import AUTH_ENV, served_to_network
from .metadata import apply_saved_pattern
from .workspace import Workspace

__all__ = ["ALLOWED_ROOTS_ENV", "IngestReport", "Upload", "add_folder", "add_uploads", "allowed_roots",
           "check_allowed", "make_thumbnails", "safe_relative_path"]

ALLOWED_ROOTS_ENV = "TAC_STUDIO_ALLOWED_ROOTS"
THUMB_SIZE = 256  # the embedding pipeline's default, so its thumbnails and ours are the same files
THUMB_STAGE = "making thumbnails"
COPY_STAGE = "saving uploads"
_COPY_CHUNK = 1024 * 1024
_STAGING_PREFIX = ".staging-"

#: An upload: a ``(name, bytes)`` pair or a file-like object with ``.name`` (Streamlit's ``UploadedFile``).
Upload = Union[tuple[str, bytes], BinaryIO]


@dataclass(frozen=True)
class IngestReport:
    """What one add did. ``not_added`` lists (relative path, status, reason) of skipped files and duplicates."""

    source_id: int
    kind: str
    location: str
    root: str
    files: int
    added: int
    duplicates: int
    skipped: int
    thumbnails_made: int
    image_ids: tuple[int, ...]
    not_added: tuple[tuple[str, str, str], ...]

    def summary(self) -> str:
        return (f"{self.added} new image(s), {self.duplicates} duplicate(s), {self.skipped} skipped, "
                f"of {self.files} file(s)")


# -- where a server-side folder may be ------------------------------------------------------------------
def allowed_roots() -> Optional[list[Path]]:
    """The folders ``TAC_STUDIO_ALLOWED_ROOTS`` allows (resolved), or None when unrestricted."""
    text = os.environ.get(ALLOWED_ROOTS_ENV, "")
    roots = [Path(part.strip()).expanduser().resolve() for part in text.split(os.pathsep) if part.strip()]
    return roots or None


def check_allowed(folder: str | os.PathLike) -> Path:
    """The folder, resolved (links followed), if it exists, is a folder and lies inside an allowed root."""
    text = os.fspath(folder).strip()
    if not text:
        raise InvalidInputError("the folder path is empty; type the full path of a folder of images.")
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise InvalidInputError(f"{text!r} is not a full path; give the folder's full path as seen by the machine "
                                "running TAC Studio (e.g. /data/photos or D:\\photos).")
    resolved = path.resolve()
    roots = allowed_roots()
    if roots is None and served_to_network():
        raise InvalidInputError(f"adding a folder of the server by its path is switched off: TAC Studio is served to "
                                f"other machines ({AUTH_ENV} is not local) and {ALLOWED_ROOTS_ENV} is not set. Ask "
                                f"whoever runs TAC Studio to set {ALLOWED_ROOTS_ENV} to the folders that may be added, "
                                "or upload the images instead.")
    if roots is not None and not any(_inside(resolved, root) for root in roots):
        shown = ", ".join(str(r) for r in roots)
        raise InvalidInputError(f"{resolved} is outside the folders this server allows ({shown}); choose a folder "
                                f"inside one of them, or ask whoever runs TAC Studio to add it to "
                                f"{ALLOWED_ROOTS_ENV}.")
    if not resolved.exists():
        raise InvalidInputError(f"{resolved} does not exist on the machine running TAC Studio; check the path.")
    if not resolved.is_dir():
        raise InvalidInputError(f"{resolved} is a file, not a folder; give the folder that holds the images (or "
                                "upload the file instead).")
    return resolved


def _inside(path: Path, root: Path) -> bool:
    try:
        return os.path.commonpath([path, root]) == str(root)
    except ValueError:  # different drives on Windows
        return False


# -- adding ---------------------------------------------------------------------------------------------
def add_folder(workspace: Workspace, folder: str | os.PathLike, recursive: bool = True,
               progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None) -> IngestReport:
    """Scan a folder on this machine (left where it is) into the workspace, then make thumbnails; admins only."""
    workspace.require("add_server_folder")
    resolved = check_allowed(folder)
    if _inside(resolved, workspace.path) or _inside(workspace.path, resolved):
        raise InvalidInputError(f"{resolved} holds (or is inside) this workspace's own folder; choose the folder "
                                "of your images instead.")
    image_set = scan_folder(resolved, recursive=recursive, progress=progress, cancel=cancel)
    if not image_set.records:
        raise EmptyInputError(f"{resolved} holds no files; choose the folder that holds the images.")
    return _store(workspace, image_set, "path", os.fspath(folder).strip(), progress, cancel)


def add_uploads(workspace: Workspace, uploads: Sequence[Upload], folder_upload: bool = False,
                progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None) -> IngestReport:
    """Save uploaded files (zips are extracted) under ``files/<upload id>/``, scan them, add them.

    ``folder_upload``: the uploads are one folder picked in the browser; names are its relative paths
    (``photos/sub/a.png``) and the common top folder is dropped.
    """
    workspace.require("add_images")
    items = [_name_and_reader(upload) for upload in uploads]
    if not items:
        raise EmptyInputError("no files were uploaded; choose files, a .zip or a folder first.")
    names = [name for name, _ in items]
    all_zips = all(name.lower().endswith(".zip") for name in names)
    kind = "folder" if folder_upload else "zip" if all_zips else "upload"
    location, strip = _location(names, folder_upload)
    files_dir = workspace.files_dir
    files_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_uploads(workspace)
    upload_id = f"{kind}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    staging, final = files_dir / f"{_STAGING_PREFIX}{upload_id}", files_dir / upload_id
    staging.mkdir()
    refused: list[tuple[str, str]] = []
    try:
        _save_all(items, staging, strip, single_zip=all_zips and len(items) == 1, refused=refused,
                  progress=progress, cancel=cancel)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        image_set = scan_folder(final, progress=progress, cancel=cancel)
        extra = tuple(ImageRecord(name, name, "", 0, 0, 0, "skipped", reason) for name, reason in refused)
        image_set = ImageSet(image_set.root, image_set.records + extra)
        if not image_set.records:
            raise EmptyInputError("the upload holds no files (empty zip or folder); choose other files.")
        return _store(workspace, image_set, kind, location, progress, cancel)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)  # nothing of this upload was stored: leave no copy behind
        raise


def _store(workspace: Workspace, image_set: ImageSet, kind: str, location: str,
           progress: Optional[ProgressFn], cancel: Optional[CancelToken]) -> IngestReport:
    added = workspace.add_image_set(image_set, kind, location)
    frame = workspace.images()
    frame = frame[frame["source_id"] == added.source_id]
    apply_saved_pattern(workspace, frame["id"])  # a new batch gets its line, camera, ... from the saved pattern
    ok = frame[frame["status"] == "ok"]
    made = make_thumbnails(workspace, list(zip(ok["path"], ok["sha256"])), progress=progress, cancel=cancel)
    not_added = tuple(frame.loc[frame["status"] != "ok", ["rel_path", "status", "reason"]]
                      .itertuples(index=False, name=None))
    return IngestReport(added.source_id, kind, location, image_set.root, len(image_set.records),
                        len(added.image_ids), added.duplicates, added.skipped, made, added.image_ids, not_added)


# -- thumbnails -----------------------------------------------------------------------------------------
def make_thumbnails(workspace: Workspace, images: Sequence[tuple[str, str]], size: int = THUMB_SIZE,
                    progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None,
                    workers: Optional[int] = None) -> int:
    """Write ``thumbs/<sha256>.jpg`` for each (path, sha256) that has none yet; returns how many were made.

    A file that cannot be decoded now is left without a thumbnail (the embedder reports it with a reason).
    """
    todo = list({sha: path for path, sha in images
                 if sha and not thumbnail_path(workspace.thumbs_dir, sha).exists()}.items())
    report(progress, THUMB_STAGE, 0, len(todo))
    if not todo:
        return 0

    def one(item: tuple[str, str]) -> bool:
        sha, path = item
        try:
            write_thumbnail(open_image_rgb(path), thumbnail_path(workspace.thumbs_dir, sha), size)
        except (ImageDecodeError, OSError):
            return False
        return True

    made = done = 0
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) + 2)) as pool:
        for start in range(0, len(todo), 64):
            check_cancel(cancel)
            for ok in pool.map(one, todo[start:start + 64]):
                made += ok
                done += 1
            report(progress, THUMB_STAGE, done, len(todo))
    return made


# -- uploads --------------------------------------------------------------------------------------------
def safe_relative_path(name: str) -> str:
    """A user-given relative name as a safe POSIX relative path, or :class:`InvalidInputError` saying why.

    The rules are those of zip extraction: backslashes count as separators, absolute paths, drive letters
    and ``..`` are refused, hidden/system components are refused, each component is made valid everywhere.
    """
    text = str(name).replace("\\", "/").replace("\x00", "")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":" and text[0].isalpha()):
        raise InvalidInputError("absolute path")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidInputError("path leaves the folder (../)")
    if not parts:
        raise InvalidInputError("empty name")
    if any(is_hidden_or_system(p) for p in parts):
        raise InvalidInputError("hidden or system file")
    return "/".join(safe_component(p) for p in parts)


def _name_and_reader(upload: Upload) -> tuple[str, BinaryIO]:
    import io

    if isinstance(upload, tuple):
        name, data = upload
        return str(name), io.BytesIO(bytes(data))
    name = getattr(upload, "name", None)
    if not isinstance(name, str) or not hasattr(upload, "read"):
        raise InvalidInputError(f"an upload must be a (name, bytes) pair or a file with a name, not "
                                f"{type(upload).__name__}.")
    return name, upload


def _location(names: list[str], folder_upload: bool) -> tuple[str, int]:
    """How the source is described, and how many leading components to drop (an uploaded folder's name)."""
    if not folder_upload:
        return (names[0] if len(names) == 1 else f"{len(names)} uploaded files"), 0
    relative = [_without_dot_prefix(n) for n in names]
    firsts = {n.split("/")[0] for n in relative}
    nested = all("/" in n for n in relative)
    if len(firsts) == 1 and nested:
        return f"uploaded folder {firsts.pop()}", 1
    return f"uploaded folder ({len(names)} files)", 0


def _without_dot_prefix(name: str) -> str:
    """``./a/b.png`` (how browsers name dropped files) as ``a/b.png``; other names unchanged."""
    text = name.replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _save_all(items: list[tuple[str, BinaryIO]], staging: Path, strip: int, single_zip: bool,
              refused: list[tuple[str, str]], progress: Optional[ProgressFn],
              cancel: Optional[CancelToken]) -> None:
    used: set[str] = set()
    report(progress, COPY_STAGE, 0, len(items))
    for done, (name, reader) in enumerate(items, start=1):
        check_cancel(cancel)
        shown = name.replace("\\", "/")
        try:
            rel = safe_relative_path("/".join(_without_dot_prefix(name).split("/")[strip:]) if strip else shown)
        except InvalidInputError as exc:
            refused.append((shown, str(exc)))
            continue
        if rel.lower().endswith(".zip"):
            target_dir = staging if single_zip else staging / rel[:-4]
            refused.extend(_extract(reader, staging, target_dir, rel))
            continue
        if rel.casefold() in used:
            refused.append((shown, "same name as another uploaded file"))
            continue
        used.add(rel.casefold())
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            _rewind(reader)
            shutil.copyfileobj(reader, out, _COPY_CHUNK)
        report(progress, COPY_STAGE, done, len(items))
    report(progress, COPY_STAGE, len(items), len(items))


def _extract(reader: BinaryIO, staging: Path, target_dir: Path, rel: str) -> list[tuple[str, str]]:
    """Extract one uploaded zip; its refused members come back as (zip/member, reason)."""
    handle, tmp = tempfile.mkstemp(dir=staging, prefix=".", suffix=".zip")
    try:
        with os.fdopen(handle, "wb") as out:
            _rewind(reader)
            shutil.copyfileobj(reader, out, _COPY_CHUNK)
        try:
            _, rejected = extract_zip_safely(tmp, target_dir)
        except InvalidInputError:
            return [(rel, "not a readable zip archive")]
        return [(f"{rel}/{member}", reason) for member, reason in rejected]
    finally:
        os.unlink(tmp)


def _rewind(reader: BinaryIO) -> None:
    if hasattr(reader, "seek"):
        reader.seek(0)


def _remove_stale_uploads(workspace: Workspace, max_age_s: float = 24 * 3600) -> None:
    """Remove what uploads a crash interrupted more than a day ago (an upload in progress is younger): staging
    folders, and upload folders renamed into place whose source was never committed (no source names them)."""
    import time

    stored = {Path(root).name for root in workspace.sources()["root"]}
    for entry in workspace.files_dir.iterdir():
        if not entry.is_dir() or entry.is_symlink() or entry.name in stored:
            continue
        try:
            if time.time() - entry.stat().st_mtime > max_age_s:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def describe_roots() -> str:
    """One line for the UI: which server folders may be added."""
    roots = allowed_roots()
    if roots is None and served_to_network():
        return f"Switched off on this server: {ALLOWED_ROOTS_ENV} is not set."
    if roots is None:
        return f"Any folder this server can read (set {ALLOWED_ROOTS_ENV} to restrict)."
    return f"Only folders inside: {', '.join(str(r) for r in roots)} (from {ALLOWED_ROOTS_ENV})."


def iter_sources(workspace: Workspace) -> Iterable[dict]:
    """The workspace's sources with their image counts, newest first, for the images page."""
    images = workspace.images()
    counts = images.groupby(["source_id", "status"]).size().unstack(fill_value=0) if len(images) else None
    for row in workspace.sources().iloc[::-1].itertuples(index=False):
        get = (lambda s: int(counts.loc[row.id, s]) if counts is not None and row.id in counts.index
               and s in counts.columns else 0)
        yield {"id": row.id, "kind": row.kind, "location": row.location, "added": row.added,
               "ok": get("ok"), "duplicates": get("duplicate"), "skipped": get("skipped")}
