"""Which torch device a computation runs on: the one choice every layer shares (clustering, embedding, jobs),
kept apart from the model code so the clustering layer needs no model library."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .errors import InvalidInputError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cuda", "mps", "cpu")  # what a user may choose; resolve_device also takes "cuda:N"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; asking for one that is absent is an error, not a fallback."""
    import torch  # here, not at import: DEVICES is read by the command line before torch is needed

    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    kind, _, index = text.partition(":")
    if kind not in DEVICES[1:] or (index and not (kind == "cuda" and index.isdigit())):
        raise InvalidInputError(f"Unknown device {device!r}; use auto, cuda, cuda:N, mps or cpu.")
    available = {"cuda": torch.cuda.is_available(), "mps": mps_available(), "cpu": True}[kind]
    if not available or (index and int(index) >= torch.cuda.device_count()):
        raise InvalidInputError(f"Device {device!r} was asked for but is not available here (detected: "
                                f"{describe_devices()}); use --device auto or cpu.")
    return torch.device(text)


def describe_devices() -> str:
    """One line naming the accelerators this process can use, for the UI and error messages."""
    import torch

    parts = [f"cuda:{i} {torch.cuda.get_device_name(i)} "
             f"({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
             for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)] or ["no CUDA GPU"]
    parts.append("Apple MPS" if mps_available() else "no MPS")
    parts.append(f"CPU with {os.cpu_count() or 1} cores")
    return ", ".join(parts)


def mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
