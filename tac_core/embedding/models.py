"""Which CLIP model to use, on which device, and loading it with errors a user can act on.

A :class:`ModelSpec` names an open_clip architecture and where its weights come from. Its
:meth:`~ModelSpec.identity` keys every embedding cache, so it changes whenever the weights could. Weights
are always loaded from a file (a user's checkpoint, a ``local-dir:`` folder, or open_clip's download cache),
so each failure (offline, missing file, corrupt file, wrong architecture) gets its own message.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import open_clip
import torch

from ..atomic import atomic_path
from .cache import sha256_file
from ..devices import resolve_device
from ..errors import InvalidInputError, WeightsUnavailableError

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
RANDOM_WEIGHTS = "none"
LOCAL_DIR_PREFIX = "local-dir:"
LOCAL_DIR_CONFIG = "open_clip_config.json"

#: Weight file names open_clip writes, most preferred first.
_PREFERRED_WEIGHT_FILES = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
_HF_DEFAULT_WEIGHTS, _HF_SAFE_WEIGHTS = "open_clip_pytorch_model.bin", "open_clip_model.safetensors"
_BUILTIN_MODELS = frozenset(open_clip.list_models())
_INIT_SEED = 0  # random (pretrained="none") weights are seeded, so their identity is stable
_MODEL_CACHE_SIZE = 2
_SUPPLY_WEIGHTS = (f"Run once with internet access to download them, or pass --checkpoint PATH to a weights file, "
                   f"or '{LOCAL_DIR_PREFIX}FOLDER' holding {LOCAL_DIR_CONFIG} and the weights")


@dataclass(frozen=True)
class ModelSpec:
    """An open_clip model and the source of its weights.

    ``name`` is an open_clip model name (``"ViT-B-32"``), ``"local-dir:/folder"`` (a folder holding
    ``open_clip_config.json`` and one weights file), or the path of a ``.json`` model config (registered with
    open_clip under its file stem). ``pretrained`` is an open_clip tag, or ``"none"`` for seeded random
    weights (smoke tests only). ``checkpoint`` is a local weights file; it overrides ``pretrained`` and the
    weights of a ``local-dir:`` folder.
    """

    name: str = DEFAULT_MODEL
    pretrained: str = DEFAULT_PRETRAINED
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        for field, value, example in (("Model name", self.name, DEFAULT_MODEL),
                                      ("Pretrained tag", self.pretrained, DEFAULT_PRETRAINED)):
            if not isinstance(value, str) or not value.strip():
                raise InvalidInputError(f"{field} {value!r} is empty; give e.g. {example!r}.")
        if self.name.startswith("hf-hub:"):
            raise InvalidInputError(f"Model {self.name!r}: 'hf-hub:' names are not supported; download the "
                                    f"repository and use '{LOCAL_DIR_PREFIX}FOLDER'.")
        object.__setattr__(self, "name", self.name.strip())
        object.__setattr__(self, "pretrained", self.pretrained.strip())
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", os.fspath(self.checkpoint))

    @property
    def kind(self) -> str:
        """``"local-dir"``, ``"config-file"`` or ``"builtin"`` (an open_clip model name)."""
        if self.name.startswith(LOCAL_DIR_PREFIX):
            return "local-dir"
        return "config-file" if self.name.lower().endswith(".json") else "builtin"

    @property
    def local_dir(self) -> Path:
        return Path(self.name[len(LOCAL_DIR_PREFIX):]).expanduser().resolve()

    @property
    def config_path(self) -> Path | None:
        """The JSON file the architecture is read from (None for open_clip's built-in names)."""
        if self.kind == "builtin":
            return None
        return self.local_dir / LOCAL_DIR_CONFIG if self.kind == "local-dir" else Path(self.name).expanduser()

    def architecture_config(self) -> dict[str, Any]:
        """The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``), read without building."""
        path = self.config_path
        if path is None:
            config = open_clip.get_model_config(self.name)
            if config is None:
                raise InvalidInputError(
                    f"Unknown model {self.name!r}: not an open_clip model name, a '{LOCAL_DIR_PREFIX}' folder or a "
                    ".json config. Known names include ViT-B-32, ViT-B-16 and ViT-L-14 (open_clip.list_models())."
                )
            return config
        if self.kind == "local-dir" and not self.local_dir.is_dir():
            raise InvalidInputError(f"Model folder {self.local_dir} does not exist.")
        if not path.is_file():
            raise InvalidInputError(f"Model config file {path} does not exist.")
        if self.kind == "config-file" and path.stem in _BUILTIN_MODELS:
            raise InvalidInputError(f"Model config file {path} is named like open_clip's built-in {path.stem!r}; "
                                    "rename it so it cannot replace the built-in architecture.")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"Model config {path} could not be read as JSON ({exc}).") from exc
        if self.kind == "local-dir" and isinstance(config, dict):
            config = config.get("model_cfg")
        if not isinstance(config, dict) or not all(k in config for k in ("embed_dim", "vision_cfg", "text_cfg")):
            raise InvalidInputError(
                f"Model config {path} is not an open_clip model config: it needs embed_dim, vision_cfg and "
                f"text_cfg (an {LOCAL_DIR_CONFIG} keeps them under 'model_cfg')."
            )
        return config

    @property
    def embed_dim(self) -> int:
        return int(self.architecture_config()["embed_dim"])

    def identity(self) -> str:
        """A stable string naming the architecture and the exact weights: the key of every embedding cache.

        Built-in names with a tag are named as such; otherwise the config file's and the weights file's
        sha256 are used, so renaming or moving files keeps the cache and changing their content does not.
        """
        if self.kind == "builtin" and self.checkpoint is None:
            return f"{self.name}:{f'random-seed{_INIT_SEED}' if self.pretrained == RANDOM_WEIGHTS else self.pretrained}"
        architecture = self.name
        if self.config_path is not None:
            self.architecture_config()  # validates the file before hashing it
            label = "local-dir" if self.kind == "local-dir" else self.config_path.stem
            architecture = f"{label}[config {hashlib.sha256(self.config_path.read_bytes()).hexdigest()[:16]}]"
        weights_file = locate_weights(self)
        weights = f"random-seed{_INIT_SEED}" if weights_file is None else f"sha256-{sha256_file(weights_file)}"
        return f"{architecture}:{weights}"

    def __str__(self) -> str:
        if self.checkpoint is not None:
            return f"{self.name} (checkpoint {self.checkpoint})"
        return self.name if self.kind == "local-dir" else f"{self.name} (pretrained={self.pretrained})"


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for inference: eval mode on ``device``, with its own val transform and tokenizer."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]
    spec: ModelSpec
    device: torch.device
    embed_dim: int


@contextlib.contextmanager
def inference_context(device: torch.device) -> Iterator[None]:
    """No autograd, and fp16 autocast on CUDA (about twice as fast there; CPU and MPS stay in fp32)."""
    autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        yield


# ---------------------------------------------------------------------------------------------- loading

_loaded_models: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
_loaded_models_lock = threading.Lock()


def load_model(spec: ModelSpec, device: str | torch.device = "auto") -> LoadedModel:
    """Load ``spec`` on ``device``; the last few loaded models stay in memory so the app does not reload them."""
    if not isinstance(spec, ModelSpec):
        raise InvalidInputError(f"Expected a ModelSpec, got {type(spec).__name__}.")
    device = resolve_device(device)
    key = (spec.identity(), str(device))
    with _loaded_models_lock:
        if key not in _loaded_models:
            _loaded_models[key] = _build(spec, device)
            while len(_loaded_models) > _MODEL_CACHE_SIZE:
                _loaded_models.popitem(last=False)
        _loaded_models.move_to_end(key)
        return _loaded_models[key]


def clear_model_cache() -> None:
    """Forget the in-memory models (frees their memory once nothing else holds them)."""
    with _loaded_models_lock:
        _loaded_models.clear()


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model``'s weights atomically: ``.safetensors`` by that suffix, else a torch state dict."""
    path = Path(path)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp))
        else:
            torch.save(state, tmp)
    return path


def _build(spec: ModelSpec, device: torch.device) -> LoadedModel:
    embed_dim = spec.embed_dim
    weights_file = locate_weights(spec)
    model, preprocess = build_architecture(spec)
    if weights_file is not None:
        _load_weights_file(model, weights_file, spec)
    model.to(device).eval()
    try:
        tokenizer = open_clip.get_tokenizer(_open_clip_name(spec))
    except Exception as exc:  # Hugging Face tokenizers may need a download
        raise WeightsUnavailableError(f"The tokenizer of model {spec} could not be loaded ({exc}).") from exc
    return LoadedModel(model, preprocess, tokenizer, spec, device, embed_dim)


def build_architecture(spec: ModelSpec, device: str = "cpu") -> tuple[torch.nn.Module, Callable[[Any], torch.Tensor]]:
    """``spec``'s model with seeded random weights, and its val transform. On ``"meta"`` it holds no memory and
    takes milliseconds: enough to know the transform on machines that only decode images."""
    uses_tag = spec.kind == "builtin" and spec.checkpoint is None and spec.pretrained != RANDOM_WEIGHTS
    options = _tag_options(spec) if uses_tag else {}
    with _quiet_root_logger(), torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(_INIT_SEED)
        model, _, preprocess = open_clip.create_model_and_transforms(
            _open_clip_name(spec), pretrained=None, load_weights=False, device=device, **options
        )
    return model, preprocess


def _open_clip_name(spec: ModelSpec) -> str:
    if spec.kind != "config-file":
        return spec.name if spec.kind == "builtin" else f"{LOCAL_DIR_PREFIX}{spec.local_dir}"
    path = spec.config_path.resolve()
    if open_clip.get_model_config(path.stem) != spec.architecture_config():
        open_clip.add_model_config(path)  # the latest registration of a stem wins
    return path.stem


def _load_weights_file(model: torch.nn.Module, path: Path, spec: ModelSpec) -> None:
    try:
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except Exception as exc:
        if _readable_weights(path):
            raise WeightsUnavailableError(
                f"Weights file {path} does not fit the architecture of {spec.name} ({_short_reason(exc)}); give "
                "the model name or config the weights were trained with."
            ) from exc
        raise WeightsUnavailableError(
            f"Weights file {path} could not be read ({type(exc).__name__}: {_short_reason(exc)}); it is "
            "truncated or not a state-dict checkpoint. Download it again, or export one with "
            "tac_core.embedding.models.save_checkpoint."
        ) from exc


def _readable_weights(path: Path) -> bool:
    """Tells a file that cannot be read from one that does not fit (asked only after loading failed)."""
    try:
        return bool(open_clip.factory.load_state_dict(str(path), weights_only=True))
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------- weights

def locate_weights(spec: ModelSpec) -> Path | None:
    """The file holding ``spec``'s weights, or None for random weights; a tag's file may be downloaded.

    Raises :class:`WeightsUnavailableError` when there are none: callers use it as a cheap check before
    long work (scanning thousands of files) so a missing checkpoint is reported at once.
    """
    if spec.checkpoint is not None:
        path = Path(spec.checkpoint).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"Checkpoint file {path} does not exist; check the --checkpoint path.")
        return path.resolve()
    if spec.kind == "local-dir":
        return _weights_file_in(spec.local_dir)
    if spec.pretrained == RANDOM_WEIGHTS:
        return None
    if spec.kind == "config-file":
        raise WeightsUnavailableError(
            f"Model config {spec.name} has no downloadable weights (pretrained={spec.pretrained!r}); pass "
            f"--checkpoint PATH to a weights file, or pretrained={RANDOM_WEIGHTS!r} for random weights."
        )
    return _tag_weights_file(spec)


def _weights_file_in(folder: Path) -> Path:
    """open_clip's preferred weight file name in ``folder``, else its only weights file."""
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    preferred = sorted((p for p in candidates if p.name in _PREFERRED_WEIGHT_FILES),
                       key=lambda p: _PREFERRED_WEIGHT_FILES.index(p.name))
    if preferred or len(candidates) == 1:
        return (preferred or candidates)[0]
    found = f"several weights files ({', '.join(p.name for p in candidates)})" if candidates else "no weights file"
    raise WeightsUnavailableError(f"Model folder {folder} holds {found}; keep exactly one next to "
                                  f"{LOCAL_DIR_CONFIG}, e.g. named open_clip_model.safetensors.")


def _tag_config(spec: ModelSpec) -> dict[str, Any]:
    tag_config = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    if not tag_config:
        tags = open_clip.list_pretrained_tags_by_model(spec.name)
        known = ", ".join(tags[:6]) + (f" and {len(tags) - 6} more" if len(tags) > 6 else "") if tags else "none"
        raise InvalidInputError(
            f"{spec.pretrained!r} is not a pretrained tag of {spec.name} (known: {known}); or use "
            f"pretrained={RANDOM_WEIGHTS!r}, --checkpoint PATH or '{LOCAL_DIR_PREFIX}FOLDER'."
        )
    return tag_config


def _tag_options(spec: ModelSpec) -> dict[str, Any]:
    """What open_clip takes from a tag: normalisation, resizing, and QuickGELU. OpenAI's weights need
    QuickGELU; open_clip 3.x only warns when the plain ``ViT-B-32`` config lacks it, and embeds wrongly."""
    tag = _tag_config(spec)
    return {"image_mean": tag.get("mean"), "image_std": tag.get("std"), "image_interpolation": tag.get("interpolation"),
            "image_resize_mode": tag.get("resize_mode"), "force_quick_gelu": bool(tag.get("quick_gelu", False))}


def _tag_weights_file(spec: ModelSpec) -> Path:
    """The cached file when there is one (no network at all); else a download, unless HF_HUB_OFFLINE is set."""
    tag_config = _tag_config(spec)
    cached = _cached_tag_file(tag_config)
    if cached is not None:
        return cached
    sources = [f"Hugging Face {tag_config['hf_hub']}" if tag_config.get("hf_hub") else "", tag_config.get("url", "")]
    tried = ", ".join(filter(None, sources))
    where = f"{_hf_cache_dir()} and {_url_weights_cache()}"
    weights = f"Weights for {spec.name} (pretrained={spec.pretrained!r})"
    if _hf_offline():
        raise WeightsUnavailableError(f"{weights} are not in the local cache ({where}) and HF_HUB_OFFLINE=1 forbids "
                                      f"downloading them from {tried}. {_SUPPLY_WEIGHTS}, or set HF_HUB_OFFLINE=0.")
    try:
        return Path(open_clip.download_pretrained(tag_config))
    except Exception as exc:
        raise WeightsUnavailableError(f"{weights} could not be downloaded from {tried} ({type(exc).__name__}) "
                                      f"and are not in the local cache ({where}). {_SUPPLY_WEIGHTS}.") from exc


def _cached_tag_file(tag_config: dict[str, Any]) -> Path | None:
    if tag_config.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(tag_config["hf_hub"])
        filename = filename or _HF_DEFAULT_WEIGHTS
        candidates = [_HF_SAFE_WEIGHTS, filename] if filename == _HF_DEFAULT_WEIGHTS else [filename]
        for candidate in candidates:  # open_clip prefers the safetensors file, as here
            found = try_to_load_from_cache(repo_id, candidate)
            if isinstance(found, str):
                return Path(found)
    if tag_config.get("url"):
        url_file = _url_weights_cache() / os.path.basename(tag_config["url"])
        if url_file.is_file():
            return url_file
    return None


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _url_weights_cache() -> Path:
    return Path("~/.cache/clip").expanduser()  # where open_clip keeps the weights it downloads by URL


# ---------------------------------------------------------------------------------------------- helpers

def _short_reason(exc: Exception, limit: int = 160) -> str:
    """The first sentence of an exception's message (torch's span many lines), for one-line user errors."""
    text = " ".join(line.strip() for line in str(exc).splitlines()[:2] if line.strip()).split(". ")[0]
    return text if len(text) <= limit else text[:limit] + "..."


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Hide open_clip's "initialized randomly" warning: the weights are loaded right after building."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
