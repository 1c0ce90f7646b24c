"""Thumbnails of a collection's images: one small JPEG per image content, named by its content key.

Ingest makes them once when images are added; the embedding pipeline makes the missing ones in the same
decoding pass. Both write through :func:`write_thumbnail`, so every thumbnail is made the same way.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Iterable, Optional

from PIL import Image

from ..atomic import write_bytes
from ..errors import InvalidInputError

THUMBNAIL_QUALITY = 85
SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]+$")  # keys become thumbnail file names


def thumbnail_path(thumbnails_dir: str | os.PathLike, key: str) -> Path:
    """Where the thumbnail of the image whose content key is ``key`` lives."""
    return Path(thumbnails_dir) / f"{key}.jpg"


def thumbnail_exists(path: Path) -> bool:
    """An empty thumbnail is one a power cut interrupted (they are written without fsync): make it again."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def write_thumbnail(image: Image.Image, path: Path, size: int) -> None:
    """Shrink ``image`` in place to fit ``size`` pixels and write it as a JPEG (ingest and embedding share it,
    so both make identical thumbnails)."""
    write_bytes(path, thumbnail_jpeg(image, size), durable=False)  # a thumbnail can be made again: no fsync


def thumbnail_jpeg(image: Image.Image, size: int) -> bytes:
    """The thumbnail file's bytes: ``image`` shrunk in place to fit ``size`` pixels (the model input was already
    made from the full image), as a JPEG. Machines of a Ray cluster make them and send them back."""
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()


def check_thumbnail_keys(keys: Iterable[Optional[str]]) -> None:
    """Refuse keys that could not be a file name (a thumbnail is named by its key)."""
    for key in keys:
        if key is not None and not SAFE_KEY.match(key):
            raise InvalidInputError(
                f"Image key {key!r} cannot name a thumbnail file; use letters, digits, '.', '_' or '-' only."
            )
