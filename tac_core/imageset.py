"""Image files: scanning sources into an image set, and decoding any image a user may have to RGB.

(Placeholder: the scanning part is being written; ``open_image_rgb`` is the decoding entry point every
encoder uses.)
"""
from __future__ import annotations

import os

from PIL import Image, ImageOps

from .errors import InvalidInputError


class ImageDecodeError(InvalidInputError):
    """A file could not be decoded as an image; the message is the per-file reason shown to the user."""


def open_image_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` to an 8-bit RGB image with EXIF orientation applied."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return im.convert("RGB")
    except Exception as exc:  # PIL raises many types for broken files
        raise ImageDecodeError(f"{os.fspath(path)}: not a readable image ({exc})") from exc
