"""Unpacking a user's zip without ever writing outside the target folder.

Every member is checked before it is written: traversal (``../``, absolute paths, drive letters,
backslashes), links, encrypted or corrupt members, hidden or system junk such as ``__MACOSX/``, zip-bomb
compression ratios, and the size and file-count limits. A refused member is reported with its reason, never
raised, so the upload's count covers every member. Names are made valid on every OS (:func:`safe_component`).
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
import zlib

from ..errors import InvalidInputError
from .imageset import READ_CHUNK, REASON_HIDDEN, is_hidden_or_system

DEFAULT_ZIP_MAX_BYTES = 4 * 1024 ** 3
DEFAULT_ZIP_MAX_FILES = 100_000
ZIP_MAX_RATIO = 500  # deflate tops out near 1030:1 on constant data; photos and scans stay far below
ZIP_RATIO_MIN_BYTES = 1024 * 1024  # small members may compress absurdly without harm
_WINDOWS_RESERVED = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
                               *(f"lpt{i}" for i in range(10))})
_UNSAFE_NAME_CHARS = str.maketrans({**{chr(c): "_" for c in range(32)}, **{c: "_" for c in '<>:"|?*'}})


def extract_zip_safely(zip_path: str | os.PathLike, dest_dir: str | os.PathLike,
                       max_total_bytes: int = DEFAULT_ZIP_MAX_BYTES,
                       max_files: int = DEFAULT_ZIP_MAX_FILES) -> tuple[list[str], list[tuple[str, str]]]:
    """Extract a user's zip into ``dest_dir`` without ever writing outside it.

    Returns the extracted paths (archive order) and ``(member name, reason)`` for every member refused:
    traversal (``../``, absolute paths, drive letters, backslashes), links, encrypted or corrupt members,
    hidden/system junk such as ``__MACOSX/``, zip-bomb ratios and anything past the size or file limits.
    """
    dest = os.path.realpath(dest_dir)
    os.makedirs(dest, exist_ok=True)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInputError(f"{os.fspath(zip_path)} is not a readable zip archive ({exc}); "
                                "check the file or unpack it yourself and scan the folder.") from exc
    extracted: list[str] = []
    rejected: list[tuple[str, str]] = []
    used_names: set[str] = set()
    total_bytes = 0
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            try:
                rel = _safe_member_path(info)
                if rel.casefold() in used_names:
                    raise _Refused("same name as another member")
                if len(extracted) >= max_files:
                    raise _Refused(f"over the {max_files}-file limit")
                if total_bytes + info.file_size > max_total_bytes:
                    raise _Refused(f"over the {_human_bytes(max_total_bytes)} size limit")
                target = os.path.join(dest, *rel.split("/"))
                parent = os.path.realpath(os.path.dirname(target))
                if os.path.commonpath([parent, dest]) != dest:
                    raise _Refused("path leaves the folder (through a link)")
                _extract_member(archive, info, parent, target)
            except _Refused as refused:
                rejected.append((info.filename, str(refused)))
                continue
            used_names.add(rel.casefold())
            total_bytes += info.file_size
            extracted.append(target)
    return extracted, rejected


class _Refused(Exception):
    """A zip member that will not be extracted; the message is its reason."""


def _safe_member_path(info: zipfile.ZipInfo) -> str:
    """The member's sanitised relative POSIX path, or :class:`_Refused` with the reason."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise _Refused("symbolic link")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        raise _Refused("not a regular file")
    if info.flag_bits & 0x1:
        raise _Refused("encrypted")
    if info.file_size > ZIP_RATIO_MIN_BYTES and info.file_size > ZIP_MAX_RATIO * max(info.compress_size, 1):
        ratio = info.file_size // max(info.compress_size, 1)
        raise _Refused(f"compression ratio {ratio}:1 looks like a zip bomb")
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
        raise _Refused("absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _Refused("path leaves the folder (../)")
    if not parts:
        raise _Refused("empty name")
    if any(is_hidden_or_system(p) for p in parts):
        raise _Refused(REASON_HIDDEN)
    return "/".join(safe_component(p) for p in parts)


def safe_component(part: str) -> str:
    """Make one path component valid on Windows, macOS and Linux, at most 255 bytes, extension kept."""
    part = part.translate(_UNSAFE_NAME_CHARS).rstrip(" .") or "_"
    if part.split(".")[0].lower() in _WINDOWS_RESERVED:
        part = "_" + part
    if len(part.encode()) <= 255:
        return part
    stem, ext = os.path.splitext(part)
    if len(ext.encode()) > 16:  # not a real extension
        stem, ext = part, ""
    return stem.encode()[:255 - len(ext.encode())].decode(errors="ignore") + ext


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, parent: str, target: str) -> None:
    """Stream one member to a hidden temporary file beside ``target``, then rename it into place."""
    try:
        os.makedirs(parent, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=parent, prefix=".", suffix=".part")
    except OSError as exc:
        raise _Refused(_write_error(exc)) from exc
    try:
        with os.fdopen(handle, "wb") as out, archive.open(info) as member:
            shutil.copyfileobj(member, out, READ_CHUNK)
        os.replace(tmp, target)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _Refused("corrupt member") from exc
    except NotImplementedError as exc:
        raise _Refused("unsupported compression method") from exc
    except OSError as exc:
        raise _Refused(_write_error(exc)) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_error(exc: OSError) -> str:
    return f"could not write ({(exc.strerror or str(exc)).lower()})"


def _human_bytes(count: int) -> str:
    for unit, scale in (("GB", 1024 ** 3), ("MB", 1024 ** 2), ("KB", 1024)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"
