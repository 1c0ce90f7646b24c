"""JPEG decoding and resizing on the GPU (nvJPEG through torchvision), so one GPU embeds as fast as its model
runs rather than as fast as the CPU cores decode.

Only *plain* JPEGs go this way: JFIF/EXIF JPEG in RGB or greyscale, without an EXIF rotation, within the pixel
limit, at most :data:`~tac_core.inputs.image_decode.MAX_ASPECT_RATIO`:1, and ending in an end-of-image marker
(the cheap check that the file is complete: PIL refuses truncated files, nvJPEG might not). The decoding
workers then only read the file's bytes. Everything else (PNG, TIFF, CMYK, rotated JPEGs, thumbnails still to
make), and any file the device decoder refuses, is decoded by PIL exactly as on the CPU, so it fails, if it
fails, with the same reason.

The model's own transform is replayed on the decoded tensor: its ``Resize`` and ``CenterCrop`` run on the
8-bit tensor (bicubic with antialiasing, rounded to 8 bits as PIL rounds), then scaling to [0, 1] and its
``Normalize``. Pixels differ from the PIL path by a level or two: nvJPEG is not libjpeg-turbo, and a large
JPEG is decoded at full size and resized on the device instead of being reduced in the DCT domain by PIL. Tests
bound the difference on CPU tensors; it is the size of the fp16 autocast difference the GPU already has.

``TAC_STUDIO_GPU_DECODE``: ``auto`` (default: on a CUDA device where nvJPEG works), ``off``, or ``force`` (also
on the CPU, with torchvision's CPU decoder: for tests and the bench; it is not faster there).
"""
from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch
from PIL import Image

from ..errors import InvalidInputError
from ..inputs.image_decode import MAX_ASPECT_RATIO

ENV = "TAC_STUDIO_GPU_DECODE"
MODES = ("auto", "off", "force")
_ORIENTATION_TAG = 0x0112
_RESIZES, _CROPS, _NORMALIZES = ("Resize",), ("CenterCrop",), ("Normalize",)
_PASS_THROUGH = ("MaybeConvertMode", "MaybeToTensor", "ToTensor", "_convert_to_rgb")  # PIL-only steps


class DecodedBatch(NamedTuple):
    """A batch from the decoding workers: ``images`` (the rows of ``positions``, decoded by PIL), the files that
    failed, and the plain JPEGs left to the device decoder as (position, bytes)."""

    positions: list[int]
    images: Optional[torch.Tensor]
    failures: list[tuple[int, str]]
    jpegs: list[tuple[int, bytes]]


@dataclass(frozen=True)
class DeviceJpegDecoder:
    """The model transform's steps, to replay on decoded tensors (see the module docstring)."""

    steps: tuple  # the transform's Resize and CenterCrop objects, in order
    normalize: Callable[[torch.Tensor], torch.Tensor]

    @classmethod
    def for_model(cls, preprocess: Callable, device: torch.device) -> Optional["DeviceJpegDecoder"]:
        """A decoder for ``preprocess`` on ``device``, or None where images are decoded by PIL as before: not a
        CUDA device (unless forced), ``TAC_STUDIO_GPU_DECODE=off``, a transform with other steps, or no nvJPEG."""
        mode = decode_mode()
        if mode == "off" or (mode == "auto" and device.type != "cuda"):
            return None
        decoder = cls.from_transform(preprocess)
        if decoder is None or (device.type == "cuda" and not nvjpeg_works(str(device))):
            return None
        return decoder

    @classmethod
    def from_transform(cls, preprocess: Callable) -> Optional["DeviceJpegDecoder"]:
        """Read the steps of a torchvision ``Compose`` of resize, centre crop, conversions and normalisation."""
        steps, normalize = [], None
        for step in getattr(preprocess, "transforms", ()):
            name = getattr(step, "__name__", type(step).__name__)  # a function's name, else the class name
            if normalize is None and name in _RESIZES + _CROPS:
                steps.append(step)
            elif normalize is None and name in _NORMALIZES:
                normalize = step
            elif name not in _PASS_THROUGH:
                return None
        return cls(tuple(steps), normalize) if normalize is not None and steps else None

    def read(self, path: str | os.PathLike) -> Optional[bytes]:
        """The bytes of ``path`` when it is a plain JPEG (runs in the decoding workers), else None: PIL decodes it."""
        try:
            with open(path, "rb") as fh:
                data = fh.read(3)
                if data != b"\xff\xd8\xff":  # not a JPEG: PIL reads it, once
                    return None
                data += fh.read()
            if not data.rstrip(b"\x00\r\n").endswith(b"\xff\xd9"):
                return None
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                plain = (image.format == "JPEG" and image.mode in ("RGB", "L")
                         and image.getexif().get(_ORIENTATION_TAG, 1) == 1
                         and 0 < width * height <= (Image.MAX_IMAGE_PIXELS or float("inf"))
                         and max(width, height) <= MAX_ASPECT_RATIO * min(width, height))
            return data if plain else None
        except Exception:  # an unreadable or odd file: PIL's path gives it its usual reason
            return None

    def decode(self, datas: list[bytes], device: torch.device) -> list[Optional[torch.Tensor]]:
        """Each JPEG as a 3×H×W uint8 tensor on ``device`` (None for one the decoder refuses), all at once
        when it can."""
        from torchvision.io import ImageReadMode, decode_jpeg

        tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
        try:
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:  # one bad file fails the whole batch: find it
            out: list[Optional[torch.Tensor]] = []
            for tensor in tensors:
                try:
                    out.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    out.append(None)
            return out

    def transform(self, images: list[torch.Tensor]) -> torch.Tensor:
        """The model's transform of 3×H×W uint8 tensors, on their device: an (n, 3, S, S) float32 batch."""
        out = []
        for image in images:
            for step in self.steps:
                image = step(image)
            out.append(image)
        return self.normalize(torch.stack(out).float().div_(255))

    def merge(self, batch: DecodedBatch, fallback: Callable[[int], tuple[Optional[torch.Tensor], Optional[str]]],
              device: torch.device) -> tuple[list[int], Optional[torch.Tensor], list[tuple[int, str]]]:
        """The batch's rows with its JPEGs decoded on ``device`` and appended: (positions, images, failures).
        A JPEG the device refuses is decoded by ``fallback(position)`` (PIL: a tensor, or a failure reason)."""
        positions, failures = list(batch.positions), list(batch.failures)
        parts = [] if batch.images is None else [batch.images.to(device, non_blocking=True)]
        decoded = self.decode([data for _, data in batch.jpegs], device)
        good = [(position, tensor) for (position, _), tensor in zip(batch.jpegs, decoded) if tensor is not None]
        if good:
            positions += [position for position, _ in good]
            parts.append(self.transform([tensor for _, tensor in good]))
        for (position, _), tensor in zip(batch.jpegs, decoded):
            if tensor is None:
                pixels, reason = fallback(position)
                if pixels is None:
                    failures.append((position, reason))
                else:
                    positions.append(position)
                    parts.append(pixels.unsqueeze(0).to(device))
        return positions, torch.cat(parts) if parts else None, failures


def decode_mode() -> str:
    """``TAC_STUDIO_GPU_DECODE``, checked: auto, off or force."""
    mode = os.environ.get(ENV, "").strip().lower() or "auto"
    mode = {"0": "off", "false": "off", "no": "off", "1": "auto", "on": "auto"}.get(mode, mode)
    if mode not in MODES:
        raise InvalidInputError(f"{ENV} must be one of {', '.join(MODES)}; got {os.environ.get(ENV)!r}.")
    return mode


@functools.lru_cache(maxsize=None)
def nvjpeg_works(device: str) -> bool:
    """Whether torchvision decodes a JPEG on ``device`` (it needs a build with nvJPEG); asked once per device."""
    from torchvision.io import decode_jpeg

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 100, 50)).save(buffer, format="JPEG")
    try:
        decoded = decode_jpeg(torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8), device=device)
        return tuple(decoded.shape) == (3, 16, 16)
    except Exception:
        return False
