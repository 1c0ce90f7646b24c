"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Arrays, text, JSON and CSV (as text) are written to a temporary file in the destination folder, flushed to disk, then renamed over
the destination with :func:`os.replace`, which is atomic on POSIX and Windows.

``durable=False`` skips the flush (``fsync``) for files that can be made again, such as thumbnails: readers
still never see a half-written file (the rename is atomic), but after a power cut the file may be empty, so a
reader of such files treats an empty one as missing. One fsync costs milliseconds, more than making a
thumbnail.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it replaces ``dest`` (flushed to disk first unless
    ``durable=False``), on error it is removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs should get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if durable:
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(dest: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    with atomic_path(dest, durable) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    write_bytes(dest, text.encode(encoding))


def write_json(dest: str | os.PathLike, obj: Any) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_npy(dest: str | os.PathLike, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    write_bytes(dest, buf.getvalue())
