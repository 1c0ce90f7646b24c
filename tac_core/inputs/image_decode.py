"""Decoding any image file a user may have into 8-bit RGB, or a short plain reason why it cannot be.

Plant network shares hold CMYK scans, 16-bit and float TIFFs, transparent PNGs, HTML error pages saved as
``.jpg`` and worse. Each file must either become the RGB image the model sees or a one-phrase reason for the
skipped-files table. The choices below are the contract callers rely on:

- **Content decides, not the extension.** Only :data:`SUPPORTED_FORMATS` are opened, so no exotic PIL plugin
  (EPS runs Ghostscript) ever touches a file from a share.
- **Pixel limit.** ``PIL.Image.MAX_IMAGE_PIXELS`` is set for the whole process to :data:`DEFAULT_MAX_PIXELS`
  (change it with :func:`set_max_pixels`) and PIL's ``DecompressionBombWarning`` is made an error, so no code
  path decodes a bigger image silently. ``max_pixels`` lowers the limit for one call. Over the limit the
  reason reads "image is 400 megapixels, above the 100-megapixel limit", decided from the header alone.
- **Bit depth.** Integer data within 0..65535 (16-bit files) is divided by 257, so one intensity is one grey
  level in every image of a set. Float data within [0, 1] is multiplied by 255. Anything else (negative or
  wider integers, other float ranges) has no fixed meaning and is stretched min-max per image; NaN and
  infinities become the minimum.
- **Transparency** is composited on white, as viewers show it. **Animations and multi-page TIFFs** give their
  first frame. **EXIF orientation** is applied; a malformed EXIF block is ignored, not fatal. Embedded ICC
  profiles are not applied (CMYK uses PIL's plain conversion).
- **Truncated files are errors**: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left off.
- **Extreme aspect ratios** (line-scan strips such as 100,000×1): CLIP's preprocessing scales the *short* side
  up to the model's input size, so a few-hundred-byte strip would become gigabytes of pixels. The encoder
  first keeps the central part of at most :data:`MAX_ASPECT_RATIO`:1 (:func:`crop_extreme_aspect`); the
  model's centre crop would discard the rest anyway, and ordinary photos (up to 4:1) are not touched.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import warnings
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InvalidInputError

DEFAULT_MAX_PIXELS = 100_000_000
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"})
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")  # JPEG includes multi-picture (MPO)

MAX_ASPECT_RATIO = 4
REASON_CORRUPT = "truncated or corrupt image data"
REASON_EMPTY = "empty file"
REASON_NOT_REGULAR = "not a regular file"
HEAD_BYTES = 64

Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
Image.init()  # register every plugin now rather than lazily, racing, from the scanner's worker threads

_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}  # DIB header sizes: "BM" alone is too common in text
_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC",
                b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageDecodeError(InvalidInputError):
    """A file could not be decoded as an image; ``reason`` is the short phrase shown in the skipped table."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else os.fspath(path)
        super().__init__(reason if path is None else f"{self.path}: {reason}")


def set_max_pixels(limit: int) -> None:
    """Change the process-wide pixel limit (scanning and the encoder both read it)."""
    if limit <= 0:
        raise ValueError(f"max pixels must be positive, got {limit}")
    Image.MAX_IMAGE_PIXELS = int(limit)


def open_image_rgb(path: str | os.PathLike, *, max_pixels: int | None = None,
                   min_side: int | None = None) -> Image.Image:
    """Decode ``path`` to an 8-bit RGB image with EXIF orientation applied; raise :class:`ImageDecodeError`.

    ``min_side``: see :func:`decode_rgb`.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ImageDecodeError(file_error_reason(exc), path) from exc
    if not stat.S_ISREG(info.st_mode):
        raise ImageDecodeError(REASON_NOT_REGULAR, path)  # a FIFO would block the reader forever
    if info.st_size == 0:
        raise ImageDecodeError(REASON_EMPTY, path)
    image, _ = decode_rgb(path, max_pixels=max_pixels, min_side=min_side)
    return image


def crop_extreme_aspect(image: Image.Image, max_ratio: int = MAX_ASPECT_RATIO) -> Image.Image:
    """``image``, or its central part of at most ``max_ratio``:1 when it is longer than that (see the docstring)."""
    width, height = image.size
    if width > max_ratio * height:
        left = (width - max_ratio * height) // 2
        return image.crop((left, 0, left + max_ratio * height, height))
    if height > max_ratio * width:
        top = (height - max_ratio * width) // 2
        return image.crop((0, top, width, top + max_ratio * width))
    return image


def decode_rgb(
    source: str | os.PathLike | bytes, *, max_pixels: int | None = None, reduced: bool = False,
    min_side: int | None = None,
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode a path or the file's bytes; return the RGB image and its full-resolution, upright size.

    ``reduced=True`` lets JPEG decode at 1/8 scale (every byte is still decoded, so truncation is still
    found): the scanner verifies and measures an image at a fraction of the cost. ``min_side`` lets JPEG
    decode at 1/2, 1/4 or 1/8 scale while both sides stay at least ``min_side`` pixels (the encoder asks for
    twice the model's input size): a 12-megapixel photo decodes ~10x faster and still gives the model and
    the thumbnail more pixels than they keep. Other formats have no reduced decoding and ignore it.
    """
    with _reasons_for_errors(source, max_pixels), _open_within_limit(source, max_pixels) as im:
        width, height = im.size
        if reduced:
            im.draft(None, (1, 1))
        elif min_side:
            im.draft(None, (min_side, min_side))  # the largest reduction that keeps both sides >= min_side
        im.load()
        orientation = _exif_orientation(im)
        rgb = _to_rgb8(im)
    if orientation in _TRANSPOSE_FOR_ORIENTATION:
        rgb = rgb.transpose(_TRANSPOSE_FOR_ORIENTATION[orientation])
        if orientation >= 5:
            width, height = height, width
    return rgb, (width, height)


def check_header(path: str | os.PathLike, *, max_pixels: int | None = None) -> None:
    """Check format and pixel limit from the header alone, before a huge file is read to the end."""
    with _reasons_for_errors(path, max_pixels), _open_within_limit(path, max_pixels):
        pass


def sniff_format(head: bytes) -> str | None:
    """The supported format the first bytes of a file announce, or None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    return None


def unsupported_format_reason(head: bytes) -> str | None:
    """Reason for a known image format not read here (HEIC from phones, PSD, ...), None for anything else."""
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        name = _HEIF_BRANDS[head[8:12]]
    elif head.startswith(b"8BPS"):
        name = "PSD"
    elif head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        name = "JPEG 2000"
    else:
        return None
    return f"unsupported image format ({name})"


def unidentified_reason(head: bytes) -> str:
    """Reason for bytes PIL could not identify: say what they look like, so the user recognises the file."""
    if sniff_format(head):
        return REASON_CORRUPT
    other_image = unsupported_format_reason(head)
    if other_image:
        return other_image
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"%pdf"):
        return "not an image (looks like PDF)"
    if text.startswith((b"<!doctype html", b"<html")):
        return "not an image (looks like HTML)"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "not an image (looks like SVG drawing)"
    if head.startswith(b"PK\x03\x04"):
        return "not an image (looks like zip or Office file)"
    if all(byte >= 0x20 or byte in b"\t\n\r\f" for byte in head):
        return "not an image (looks like text)"
    return "not an image (unrecognised content)"


def file_error_reason(exc: OSError) -> str:
    """Short reason for an operating-system error on a file."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a folder"
    return f"could not read file ({(exc.strerror or str(exc)).lower()})"


def _too_large_reason(pixels: int | None, limit: int) -> str:
    if pixels is None:
        return f"image is above the {_megapixels(limit)}-megapixel limit"
    return f"image is {_megapixels(pixels)} megapixels, above the {_megapixels(limit)}-megapixel limit"


def _megapixels(pixels: int) -> str:
    value = pixels / 1e6
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _effective_limit(max_pixels: int | None) -> int:
    """Per-call limit, never above the process limit PIL itself enforces."""
    process_limit = Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS
    return process_limit if max_pixels is None else min(max_pixels, process_limit)


def _open_within_limit(source: str | os.PathLike | bytes, max_pixels: int | None) -> Image.Image:
    """Open lazily (header only) and refuse an image over the pixel limit before any pixel is decoded."""
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    im = Image.open(fp, formats=SUPPORTED_FORMATS)
    limit = _effective_limit(max_pixels)
    if im.width * im.height > limit:
        im.close()
        raise ImageDecodeError(_too_large_reason(im.width * im.height, limit))
    return im


@contextlib.contextmanager
def _reasons_for_errors(source: str | os.PathLike | bytes, max_pixels: int | None) -> Iterator[None]:
    """Turn whatever PIL raises on a hostile file into an :class:`ImageDecodeError` naming the file."""
    label = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
    try:
        yield
    except ImageDecodeError as exc:
        raise ImageDecodeError(exc.reason, label) from exc
    except Exception as exc:  # PIL plugins raise many types on hostile input; each becomes a reason
        raise ImageDecodeError(_reason_for(exc, source, max_pixels), label) from exc


def _reason_for(exc: Exception, source: str | os.PathLike | bytes, max_pixels: int | None) -> str:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        found = _BOMB_PIXELS.search(str(exc))
        return _too_large_reason(int(found.group(1)) if found else None, _effective_limit(max_pixels))
    if isinstance(exc, UnidentifiedImageError):
        return unidentified_reason(_head(source))
    if isinstance(exc, OSError) and exc.errno is not None:
        return file_error_reason(exc)
    if isinstance(exc, MemoryError):
        return "not enough memory to decode"
    return REASON_CORRUPT


def _head(source: str | os.PathLike | bytes) -> bytes:
    if isinstance(source, bytes):
        return source[:HEAD_BYTES]
    try:
        with open(source, "rb") as fh:
            return fh.read(HEAD_BYTES)
    except OSError:
        return b""


def _exif_orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a malformed EXIF block must not make a readable image unusable
        return 1


def _to_rgb8(im: Image.Image) -> Image.Image:
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = Image.fromarray(_scale_to_uint8(np.asarray(im)))
    if not im.has_transparency_data:
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map 16-bit, 32-bit or float samples to 0..255 by the rules in the module docstring."""
    data = values.astype(np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        data = np.where(finite, data, data[finite].min() if finite.any() else 0.0)
    low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if values.dtype.kind in "ui" and low >= 0 and high <= 65535:
        data = data / 257.0
    elif values.dtype.kind == "f" and low >= 0 and high <= 1:
        data = data * 255.0
    elif high > low:
        data = (data - low) * (255.0 / (high - low))
    else:
        data = np.zeros_like(data)
    return np.rint(data).astype(np.uint8)
