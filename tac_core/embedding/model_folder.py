"""The models folder: weights put on this machine by hand, offered by name in the app's model picker.

On a machine without internet access the weights of a CLIP model must be copied in. Everything in the models
folder (``TAC_STUDIO_MODELS``, default ``<data folder>/models``:
:func:`tac_core.workspace.workspace.models_dir`) is a model:

- a **folder** holding ``open_clip_config.json`` and its weights (what ``huggingface_hub.snapshot_download`` of an
  open_clip repository gives: :func:`download_command`) is a ``local-dir:`` model; its architecture is in the
  config;
- a **weights file** (``.safetensors``, ``.bin``, ``.pt``, ``.pth``) needs an architecture: the tensor shapes
  name the open_clip architectures it fits (:func:`fitting_architectures`; ``ViT-B-32`` and
  ``ViT-B-32-quickgelu`` have the same shapes, so a name in the file name, such as ``openai`` for OpenAI's
  QuickGELU weights, settles it), else the user is asked once and the answer is kept in the folder's
  :data:`ARCHITECTURES_FILE`.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import open_clip

from ..atomic import write_json
from ..errors import InvalidInputError
from .weights import LOCAL_DIR_CONFIG, LOCAL_DIR_PREFIX

ARCHITECTURES_FILE = "architectures.json"  # weights file name -> the open_clip architecture chosen for it
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_LAYER = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.")


@dataclass(frozen=True)
class FolderModel:
    """One model of the models folder: its name (the file or folder name), where it is, and for a weights file
    its architecture (None: not known yet; ``candidates`` are the architectures its shapes fit, empty when the
    file cannot be read). A folder's architecture is in its own config."""

    name: str
    path: Path
    is_folder: bool
    architecture: Optional[str]
    candidates: tuple[str, ...] = ()

    def model(self) -> Optional[dict]:
        """The model as run parameters store it, or None while the architecture is unknown."""
        if self.is_folder:
            return {"name": f"{LOCAL_DIR_PREFIX}{self.path}", "pretrained": "openai", "checkpoint": None}
        if self.architecture is None:
            return None
        return {"name": self.architecture, "pretrained": "openai", "checkpoint": str(self.path)}


def find_models(folder: str | os.PathLike) -> list[FolderModel]:
    """The models in ``folder`` (none when it does not exist), by name; weights files with their architecture
    as remembered, or as their shapes and name tell (:func:`fitting_architectures`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    remembered = _remembered(folder)
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name.casefold()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and (entry / LOCAL_DIR_CONFIG).is_file():
            found.append(FolderModel(entry.name, entry.resolve(), True, None))
        elif entry.is_file() and entry.suffix.lower() in WEIGHT_SUFFIXES:
            candidates = fitting_architectures(entry)
            chosen = remembered.get(entry.name) or settled_by_name(entry.name, candidates)
            found.append(FolderModel(entry.name, entry.resolve(), False, chosen, candidates))
    return found


def remember_architecture(folder: str | os.PathLike, file_name: str, architecture: str) -> None:
    """Keep the architecture the user chose for a weights file of the models folder."""
    if open_clip.get_model_config(architecture) is None:
        raise InvalidInputError(f"{architecture!r} is not an open_clip architecture; choose one of the list.")
    folder = Path(folder)
    try:
        write_json(folder / ARCHITECTURES_FILE, {**_remembered(folder), file_name: architecture})
    except OSError as exc:
        raise InvalidInputError(f"the choice cannot be saved in {folder} ({exc.strerror or exc}); make the models "
                                "folder writable, or name the file after its architecture (e.g. "
                                f"{architecture}.safetensors).") from exc


def fitting_architectures(path: str | os.PathLike) -> tuple[str, ...]:
    """The open_clip architectures (ViT image towers) whose tensor shapes the weights file has; () when the file
    cannot be read as a state dict. Reads shapes only (memory-mapped), not the whole file."""
    shapes = _shapes(Path(path))
    if not shapes:
        return ()
    try:
        width, _, patch, _ = shapes["visual.conv1.weight"]
        grid = round((shapes["visual.positional_embedding"][0] - 1) ** 0.5)
        text_context, text_width = shapes["positional_embedding"]
        signature = {"embed_dim": shapes["text_projection"][-1], "vision": (width, patch, grid * patch),
                     "text": (text_width, text_context, shapes["token_embedding.weight"][0])}
    except (KeyError, ValueError):
        return ()
    layers = {"visual.": set(), "": set()}
    for key in shapes:
        if found := _LAYER.match(key):
            layers[found[1] or ""].add(found[2])
    fits = []
    for name in open_clip.list_models():
        config = open_clip.get_model_config(name) or {}
        vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
        if (config.get("embed_dim") == signature["embed_dim"]
                and (vision.get("width"), vision.get("patch_size"), vision.get("image_size")) == signature["vision"]
                and vision.get("layers") == len(layers["visual."])
                and (text.get("width"), text.get("context_length"), text.get("vocab_size")) == signature["text"]
                and text.get("layers") == len(layers[""])):
            fits.append(name)
    return tuple(fits)


def published_tags(architecture: str) -> list[str]:
    """The pretrained tags open_clip publishes for ``architecture`` (its downloadable weights)."""
    return list(open_clip.list_pretrained_tags_by_model(architecture))


def download_command(architecture: str, tag: str) -> Optional[str]:
    """One command that fetches ``architecture``'s ``tag`` weights on a machine with internet access, as a model
    folder (or a weights file) to copy into the models folder; None for a tag open_clip does not publish."""
    config = open_clip.get_pretrained_cfg(architecture, tag)
    if not config:
        return None
    target = f"{architecture}-{tag}"
    if config.get("hf_hub"):
        repo = config["hf_hub"].rstrip("/").split("/")
        return (f"python -m pip install -q huggingface_hub && python -c \"from huggingface_hub import "
                f"snapshot_download; snapshot_download('{'/'.join(repo[:2])}', local_dir='{target}', "
                f"allow_patterns=['open_clip_*'])\"")
    if config.get("url"):
        return f"curl -L -o {target}{Path(config['url']).suffix or '.pt'} {config['url']}"
    return None


# -- internals ----------------------------------------------------------------------------------------------
def _remembered(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / ARCHITECTURES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def settled_by_name(file_name: str, candidates: tuple[str, ...]) -> Optional[str]:
    """The candidate a file name settles: the only one; or the longest one named in it; OpenAI's weights use
    QuickGELU, so "openai" in the name picks the ``-quickgelu`` variant."""
    if len(candidates) == 1:
        return candidates[0]
    lowered = file_name.casefold()
    if "openai" in lowered:
        quick = [c for c in candidates if c.endswith("-quickgelu")]
        if len(quick) == 1:
            return quick[0]
    named = sorted((c for c in candidates if c.casefold() in lowered), key=len, reverse=True)
    return named[0] if named else None


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Parameter name → shape of a state-dict file (``module.`` prefixes and a ``state_dict`` wrapper removed)."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                state = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        else:
            import torch

            loaded = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            loaded = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else {}
            state = {key: tuple(value.shape) for key, value in loaded.items() if hasattr(value, "shape")}
    except Exception:  # noqa: BLE001 - not a state dict we can read: the user chooses the architecture
        return {}
    return {key.removeprefix("module."): shape for key, shape in state.items()}
