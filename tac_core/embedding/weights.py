"""Where a model's weights come from: a user's checkpoint, a ``local-dir:`` folder, or open_clip's download cache
(and the download itself), each failure with its own message in the command line's words and the app's
(:meth:`~tac_core.errors.TacError.for_app`). Without network access a missing download is refused at once
(``HF_HUB_OFFLINE``, or a source that does not answer within :data:`HUB_PROBE_TIMEOUT_S`), not after the hub's
retries. :mod:`tac_core.embedding.models` builds the model around them.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import open_clip

from ..errors import InvalidInputError, WeightsUnavailableError

if TYPE_CHECKING:
    from .models import ModelSpec

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
_SUPPLY_WEIGHTS = (f"Run once with internet access to download them, or pass --checkpoint PATH to a weights file, "
                   f"or '{LOCAL_DIR_PREFIX}FOLDER' holding {LOCAL_DIR_CONFIG} and the weights")
_SUPPLY_WEIGHTS_APP = ("Put a weights file or a model folder into the models folder (the Cluster page shows where it "
                       "is and the command that downloads the weights on a machine with internet access) and choose "
                       "it as the model, or give the path of a checkpoint file")
HUB_PROBE_TIMEOUT_S = 3.0  # how long a download source may take to answer before it counts as unreachable
_probed: dict[str, tuple[float, bool]] = {}  # source -> (when, reachable): asked again after a minute


def locate_weights(spec: ModelSpec) -> Path | None:
    """The file holding ``spec``'s weights, or None for random weights; a tag's file may be downloaded.

    Raises :class:`WeightsUnavailableError` when there are none: callers use it as a cheap check before
    long work (scanning thousands of files) so a missing checkpoint is reported at once.
    """
    if spec.checkpoint is not None:
        path = Path(spec.checkpoint).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"Checkpoint file {path} does not exist; check the --checkpoint path.",
                                          f"Checkpoint file {path} does not exist on this machine; check the path.")
        return path.resolve()
    if spec.kind == "local-dir":
        return _weights_file_in(spec.local_dir)
    if spec.pretrained == RANDOM_WEIGHTS:
        return None
    if spec.kind == "config-file":
        raise WeightsUnavailableError(
            f"Model config {spec.name} has no downloadable weights (pretrained={spec.pretrained!r}); pass "
            f"--checkpoint PATH to a weights file, or pretrained={RANDOM_WEIGHTS!r} for random weights.",
            f"Model config {spec.name} has no downloadable weights: give a checkpoint file for it, or the "
            f"pretrained tag {RANDOM_WEIGHTS!r} for random weights (tests only).")
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


def tag_config(spec: ModelSpec) -> dict[str, Any]:
    tag_config = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    if not tag_config:
        tags = open_clip.list_pretrained_tags_by_model(spec.name)
        known = ", ".join(tags[:6]) + (f" and {len(tags) - 6} more" if len(tags) > 6 else "") if tags else "none"
        raise InvalidInputError(
            f"{spec.pretrained!r} is not a pretrained tag of {spec.name} (known: {known}); or use "
            f"pretrained={RANDOM_WEIGHTS!r}, --checkpoint PATH or '{LOCAL_DIR_PREFIX}FOLDER'."
        )
    return tag_config


def _tag_weights_file(spec: ModelSpec, download: bool = True) -> Path | None:
    """The cached file when there is one (no network at all); else a download (``download`` False: None, once the
    source answered). Refused at once with HF_HUB_OFFLINE set, and within :data:`HUB_PROBE_TIMEOUT_S` when the
    download source does not answer, instead of the minute the hub's own retries take."""
    config = tag_config(spec)
    cached = _cached_tag_file(config)
    if cached is not None:
        return cached
    sources = [f"Hugging Face {config['hf_hub']}" if config.get("hf_hub") else "", config.get("url", "")]
    tried = ", ".join(filter(None, sources))
    where = f"{_hf_cache_dir()} and {_url_weights_cache()}"
    weights = f"Weights for {spec.name} (pretrained={spec.pretrained!r})"
    if _hf_offline():
        raise WeightsUnavailableError(
            f"{weights} are not in the local cache ({where}) and HF_HUB_OFFLINE=1 forbids downloading them from "
            f"{tried}. {_SUPPLY_WEIGHTS}, or set HF_HUB_OFFLINE=0.",
            f"{weights} are not on this machine and downloading is switched off (HF_HUB_OFFLINE=1). "
            f"{_SUPPLY_WEIGHTS_APP}.")
    source = _download_source(config)
    if not source_reachable(source):
        raise WeightsUnavailableError(
            f"{weights} are not in the local cache ({where}) and {source} did not answer within "
            f"{HUB_PROBE_TIMEOUT_S:.0f} s (no internet access?). {_SUPPLY_WEIGHTS}.",
            f"{weights} are not on this machine and {source} cannot be reached from it (no internet access?). "
            f"{_SUPPLY_WEIGHTS_APP}.")
    if not download:
        return None
    try:
        return Path(open_clip.download_pretrained(config))
    except Exception as exc:
        raise WeightsUnavailableError(
            f"{weights} could not be downloaded from {tried} ({type(exc).__name__}) and are not in the local cache "
            f"({where}). {_SUPPLY_WEIGHTS}.",
            f"{weights} could not be downloaded ({type(exc).__name__}) and are not on this machine. "
            f"{_SUPPLY_WEIGHTS_APP}.") from exc


def check_weights(spec: ModelSpec) -> None:
    """Raise :class:`WeightsUnavailableError` at once when ``spec``'s weights are neither on this machine nor
    downloadable from here (downloads nothing): the check a page makes before starting a run."""
    if spec.kind == "builtin" and spec.checkpoint is None and spec.pretrained != RANDOM_WEIGHTS:
        _tag_weights_file(spec, download=False)
    else:
        locate_weights(spec)


def source_reachable(url: str) -> bool:
    """Whether the server of ``url`` answers an HTTP request within :data:`HUB_PROBE_TIMEOUT_S` (any status
    counts: it answered). Remembered for a minute per server."""
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    server = f"{parts.scheme}://{parts.netloc}"
    when, reachable = _probed.get(server, (0.0, False))
    if time.monotonic() - when < 60:
        return reachable
    try:
        urllib.request.urlopen(urllib.request.Request(server, method="HEAD"), timeout=HUB_PROBE_TIMEOUT_S).close()
        reachable = True
    except urllib.error.HTTPError:
        reachable = True  # it answered, with an error status
    except (OSError, ValueError):  # no route, no name, refused, timed out
        reachable = False
    _probed[server] = (time.monotonic(), reachable)
    return reachable


def _download_source(tag_config: dict[str, Any]) -> str:
    """Where open_clip downloads a tag's weights from: the Hugging Face hub when the tag names a repository."""
    if tag_config.get("hf_hub"):
        from huggingface_hub import constants

        return constants.ENDPOINT
    return tag_config.get("url", "")


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
