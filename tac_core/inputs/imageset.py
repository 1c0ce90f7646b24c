"""Image sets: which files of a folder, file list or zip the app will use, and why not the others.

Every file seen becomes an :class:`ImageRecord` with a status ("ok", "skipped", "duplicate") and a short
reason, so a network share full of odd files gives a table the user can act on, not an exception.
Decoding lives in :mod:`tac_core.inputs.image_decode`; ``open_image_rgb`` and ``ImageDecodeError`` are re-exported.

Scanning rules:
- Hidden names (``.`` prefix: ``.DS_Store``, ``._*`` AppleDouble) and OS junk (``Thumbs.db``, ``desktop.ini``,
  ``__MACOSX``, ...) are skipped; a hidden or system folder is listed once and not entered. So is a file whose
  name is not valid UTF-8 (Python gives it surrogate characters that no CSV, table or database can hold).
- Files with an image extension are decoded; other files only when their first bytes are an image signature,
  so a valid image with a wrong or no extension is used.
- Links to folders are never followed (no loops, nothing outside the chosen folder) and are listed as skipped.
  A link to a file is read like the file (the user can open it anyway) under the link's own path.
- Each image is fully decoded (JPEG at 1/8 scale) and hashed; the first copy of some bytes in ``rel_path``
  order is "ok", later ones "duplicate". A thread pool reads files (PIL and hashlib release the GIL), and
  results are always in ``rel_path`` order, so a scan is deterministic.
"""
from __future__ import annotations

import hashlib
import os
import stat
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import islice
from typing import Iterable, Optional, Sequence

from ..errors import EmptyInputError, InvalidInputError
from .image_decode import (DEFAULT_MAX_PIXELS, HEAD_BYTES, IMAGE_EXTENSIONS, REASON_EMPTY, REASON_NOT_REGULAR,
                           ImageDecodeError, check_header, decode_rgb, file_error_reason, open_image_rgb,
                           sniff_format, unsupported_format_reason)
from ..progress import CancelToken, ProgressFn, check_cancel, report

__all__ = ["DEFAULT_MAX_PIXELS", "ImageDecodeError", "ImageRecord", "ImageSet", "is_hidden_or_system",
           "open_image_rgb", "scan_files", "scan_folder"]

STAGE = "scanning images"
REASON_HIDDEN = "hidden or system file"
REASON_HIDDEN_FOLDER = "hidden or system folder"
REASON_NOT_IMAGE = "not an image file"
REASON_NOT_UTF8 = "the file name is not valid UTF-8; rename the file"
SYSTEM_NAMES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "__macosx", "$recycle.bin",
                          "system volume information"})
IN_MEMORY_BYTES = 256 * 1024 * 1024  # larger files are hashed and decoded in two passes, not held in memory
READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ImageRecord:
    """One file seen by a scan. ``width``/``height`` are the upright size (0 unless the image decoded);
    ``sha256`` is of the file's bytes, empty when the file was not read to the end."""

    path: str
    rel_path: str
    sha256: str
    size_bytes: int
    width: int
    height: int
    status: str
    reason: str
    duplicate_of: Optional[str] = None


@dataclass(frozen=True)
class ImageSet:
    """The records of one scan in ``rel_path`` order; ``ok`` ones are what the pipeline embeds."""

    root: str
    records: tuple[ImageRecord, ...]

    @property
    def ok(self) -> tuple[ImageRecord, ...]:
        return self._with_status("ok")

    @property
    def skipped(self) -> tuple[ImageRecord, ...]:
        return self._with_status("skipped")

    @property
    def duplicates(self) -> tuple[ImageRecord, ...]:
        return self._with_status("duplicate")

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.ok]

    @property
    def keys(self) -> list[str]:
        """Content hashes of the ok images: cache keys that survive renames and moves."""
        return [r.sha256 for r in self.ok]

    def summary(self) -> dict[str, int]:
        """Counts for the UI; ``files`` is every entry listed, folders not entered included."""
        return {"files": len(self.records), "ok": len(self.ok), "skipped": len(self.skipped),
                "duplicates": len(self.duplicates)}

    def require_images(self) -> ImageSet:
        """Return self, or raise :class:`EmptyInputError` when there is nothing to cluster."""
        if self.ok:
            return self
        if not self.records:
            raise EmptyInputError(f"no usable images in {self.root}: the folder holds no files.")
        raise EmptyInputError(f"no usable images in {self.root}: 0 of {len(self.records)} files could be "
                              "read; see the skipped list.")

    def to_frame(self):
        """The records as a pandas DataFrame, one row per file, for tables and CSV export."""
        import pandas as pd  # only the UI and exports need pandas

        columns = list(ImageRecord.__dataclass_fields__)
        return pd.DataFrame([[getattr(r, c) for c in columns] for r in self.records], columns=columns)

    def _with_status(self, status: str) -> tuple[ImageRecord, ...]:
        return tuple(r for r in self.records if r.status == status)


def is_hidden_or_system(name: str) -> bool:
    """Dot files and OS/desktop junk: never a user's image, even when the bytes are one."""
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def scan_folder(root: str | os.PathLike, recursive: bool = True, progress: Optional[ProgressFn] = None,
                cancel: Optional[CancelToken] = None, max_pixels: Optional[int] = None,
                workers: Optional[int] = None) -> ImageSet:
    """Scan a folder (and, if ``recursive``, its sub-folders) into an :class:`ImageSet`.

    ``max_pixels`` lowers the process pixel limit for this scan; ``workers`` threads read files (default:
    CPU count + 4, at most 16, since shares are I/O bound).
    """
    root_abs = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root_abs):
        raise InvalidInputError(f"{root_abs} is not a folder or does not exist; choose a folder of images.")
    try:
        os.scandir(root_abs).close()
    except OSError as exc:
        raise InvalidInputError(f"cannot read folder {root_abs}: {file_error_reason(exc)}.") from exc
    files, folder_records = _walk(root_abs, recursive)
    records = _examine_all(files, max_pixels, workers, progress, cancel)
    return _image_set(root_abs, records + folder_records)


def scan_files(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None,
               progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None,
               max_pixels: Optional[int] = None, workers: Optional[int] = None) -> ImageSet:
    """Scan given files; ``rel_path`` is relative to ``root`` (default: their common folder)."""
    unique = list(dict.fromkeys(os.path.abspath(os.fspath(p)) for p in paths))
    if root is not None:
        root_abs = os.path.abspath(os.fspath(root))
    elif unique:
        root_abs = os.path.commonpath([os.path.dirname(p) for p in unique])
    else:
        root_abs = os.getcwd()
    files = []
    for path in unique:
        rel = os.path.relpath(path, root_abs)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            raise InvalidInputError(f"{path} is not inside {root_abs}; give a root that contains every file.")
        files.append((path, _posix(rel)))
    return _image_set(root_abs, _examine_all(files, max_pixels, workers, progress, cancel))


def _walk(root: str, recursive: bool) -> tuple[list[tuple[str, str]], list[ImageRecord]]:
    """Files to examine and records for folders that are not entered; never follows folder links."""
    files: list[tuple[str, str]] = []
    folder_records: list[ImageRecord] = []

    def skip_folder(path: str, reason: str) -> None:
        folder_records.append(_skipped(path, _posix(os.path.relpath(path, root)), reason))

    def unreadable(exc: OSError) -> None:
        skip_folder(exc.filename, file_error_reason(exc))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        entered = []
        for name in dirnames if recursive else ():
            full = os.path.join(dirpath, name)
            if is_hidden_or_system(name):
                skip_folder(full, REASON_HIDDEN_FOLDER)
            elif os.path.islink(full):
                skip_folder(full, "link to a folder (not followed)")
            else:
                entered.append(name)
        dirnames[:] = entered
        for name in filenames:
            full = os.path.join(dirpath, name)
            files.append((full, _posix(os.path.relpath(full, root))))
    return files, folder_records


def _examine_all(files: Sequence[tuple[str, str]], max_pixels: Optional[int], workers: Optional[int],
                 progress: Optional[ProgressFn], cancel: Optional[CancelToken]) -> list[ImageRecord]:
    """Examine files on a thread pool, a bounded window ahead, collecting results in input order."""
    workers = workers or min(16, (os.cpu_count() or 1) + 4)
    results: list[ImageRecord] = []
    report(progress, STAGE, 0, len(files))
    check_cancel(cancel)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan") as pool:
        queue = iter(files)
        pending: deque[Future] = deque()

        def top_up() -> None:
            for path, rel in islice(queue, 2 * workers - len(pending)):
                pending.append(pool.submit(_examine, path, rel, max_pixels))

        top_up()
        try:
            while pending:
                results.append(pending.popleft().result())
                report(progress, STAGE, len(results), len(files))
                check_cancel(cancel)
                top_up()
        finally:
            for future in pending:
                future.cancel()
    return results


def _examine(path: str, rel_path: str, max_pixels: Optional[int]) -> ImageRecord:
    """Decide one file's status; every problem becomes a skipped record with a reason, never an exception."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return _skipped(path, rel_path, "broken link" if os.path.islink(path) else "file not found")
    except OSError as exc:
        return _skipped(path, rel_path, file_error_reason(exc))
    size = info.st_size
    name = os.path.basename(path)
    if is_hidden_or_system(name):
        return _skipped(path, rel_path, REASON_HIDDEN, size)
    if storable_text(path) != path:  # bytes that are no UTF-8 (an old Latin-1 share): no table, CSV or database
        return _skipped(path, rel_path, REASON_NOT_UTF8, size)
    if not stat.S_ISREG(info.st_mode):
        return _skipped(path, rel_path, REASON_NOT_REGULAR, size)
    if size == 0:
        return _skipped(path, rel_path, REASON_EMPTY)
    digest = ""
    try:
        if os.path.splitext(name)[1].lower().lstrip(".") not in IMAGE_EXTENSIONS:
            with open(path, "rb") as fh:
                head = fh.read(HEAD_BYTES)
            if sniff_format(head) is None:
                return _skipped(path, rel_path, unsupported_format_reason(head) or REASON_NOT_IMAGE, size)
        if size > IN_MEMORY_BYTES:
            check_header(path, max_pixels=max_pixels)  # refuse a bomb or non-image before reading it all
        digest, data = _read_and_hash(path, keep=size <= IN_MEMORY_BYTES)
        _, (width, height) = decode_rgb(path if data is None else data, max_pixels=max_pixels, reduced=True)
    except ImageDecodeError as exc:
        return _skipped(path, rel_path, exc.reason, size, digest)
    except OSError as exc:
        return _skipped(path, rel_path, file_error_reason(exc), size, digest)
    return ImageRecord(path, rel_path, digest, size, width, height, "ok", "")


def _read_and_hash(path: str, keep: bool) -> tuple[str, Optional[bytes]]:
    """SHA-256 of the file, streamed; the bytes too when ``keep``, so a share is read once."""
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(READ_CHUNK), b""):
            digest.update(chunk)
            if keep:
                chunks.append(chunk)
    return digest.hexdigest(), b"".join(chunks) if keep else None


def _image_set(root: str, records: Iterable[ImageRecord]) -> ImageSet:
    """Sort by ``rel_path`` and mark every later copy of already-seen bytes as a duplicate."""
    first_by_hash: dict[str, str] = {}
    ordered = []
    for record in sorted(records, key=lambda r: r.rel_path):
        if record.status == "ok":
            first = first_by_hash.setdefault(record.sha256, record.rel_path)
            if first != record.rel_path:
                record = replace(record, status="duplicate", reason=f"same content as {first}",
                                  duplicate_of=first)
        ordered.append(record)
    return ImageSet(root, tuple(ordered))


def _skipped(path: str, rel_path: str, reason: str, size: int = 0, sha256: str = "") -> ImageRecord:
    return ImageRecord(path, rel_path, sha256, size, 0, 0, "skipped", reason)


def storable_text(text: str) -> str:
    """``text`` as UTF-8 can hold it: the undecodable bytes of a file name (surrogates) become "?"."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def _posix(rel_path: str) -> str:
    return rel_path.replace(os.sep, "/")
