"""Embedding through the cache: what the CLI and the app call.

Caches live under ``cache_root/<model hash>/``: ``images/`` keyed by image content sha256, and
``text-<template hash>/`` keyed by the normalised term. The model hash comes from
:meth:`ModelSpec.identity`, so other weights never reuse these vectors. Only missing entries are encoded,
and the model is not even loaded when nothing is missing.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

import numpy as np

from . import image_encoding
from . import text_encoding
from ..atomic import write_text
from .cache import VectorStore
from ..errors import InvalidInputError
from ..inputs.thumbnails import thumbnail_exists, thumbnail_path
from .image_encoding import ImageEncodingResult, content_keys, encode_images
from .models import LoadedModel, ModelSpec, load_model
from ..progress import CancelToken, ProgressFn, report
from ..inputs.prompts import template_set
from .text_encoding import encode_vocabulary

if TYPE_CHECKING:
    from .ray_cluster import RayOptions

_HASH_LENGTH = 16
_VOCABULARY_WRITE_CHUNK = 2048  # names encoded between two cache writes: a crash loses at most this many


def term_key(term: str) -> str:
    """The cache key of a vocabulary term: stripped, inner whitespace collapsed (case is kept)."""
    if not isinstance(term, str) or not term.strip():
        raise InvalidInputError(f"Vocabulary terms must be non-empty strings; got {term!r}.")
    return " ".join(term.split())


def model_cache_dir(spec: ModelSpec, cache_root: str | os.PathLike) -> Path:
    """``cache_root/<hash of spec.identity()>``, with the identity written beside it for people."""
    identity = spec.identity()
    folder = Path(cache_root) / _short_hash(identity)
    if not (folder / "identity.txt").exists():
        write_text(folder / "identity.txt", identity + "\n")
    return folder


def text_cache_dir(spec: ModelSpec, templates: str | Iterable[str], cache_root: str | os.PathLike) -> Path:
    """The text cache of one model and template set (``<model hash>/text-<templates hash>/``)."""
    return model_cache_dir(spec, cache_root) / f"text-{_short_hash(json.dumps(template_set(templates)))}"


def cached_term_count(names: Sequence[str], spec: ModelSpec, templates: str, cache_root: str | os.PathLike) -> int:
    """How many of ``names`` already have a vector in the text cache for this model and templates.

    Reads only the cache's key files (``shard-*.keys.txt``, see :mod:`tac_core.embedding.cache`), not the
    vectors.
    """
    folder = text_cache_dir(spec, templates, cache_root)
    keys: set[str] = set()
    for path in sorted(folder.glob("shard-*.keys.txt")) if folder.is_dir() else ():
        if path.with_name(path.name.replace(".keys.txt", ".npy")).exists():
            try:
                keys.update(path.read_text(encoding="utf-8").split("\n"))
            except (OSError, UnicodeDecodeError):
                continue
    return sum(1 for key in dict.fromkeys(term_key(n) for n in names) if key in keys)


def embed_images(
    spec_or_loaded: ModelSpec | LoadedModel,
    paths: Sequence[str | os.PathLike],
    keys: Optional[Sequence[str]],
    cache_root: str | os.PathLike,
    device: str = "auto",
    batch_size: int = image_encoding.DEFAULT_BATCH_SIZE,
    num_workers: int | str = "auto",
    thumbnails_dir: Optional[str | os.PathLike] = None,
    thumb_size: int = 256,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
    precision: str = "auto",
    ray: Optional["RayOptions"] = None,
) -> ImageEncodingResult:
    """Embeddings of ``paths`` in input order, through the image cache of the model.

    ``keys`` are the images' content sha256 (as the image set records them); None computes them. ``device``
    is used only when a ``ModelSpec`` has to be loaded. See :func:`~tac_core.embedding.image_encoding.encode_images`
    (also for ``precision``). With ``ray``, what is missing is encoded on that Ray cluster
    (:mod:`tac_core.embedding.distributed`), into the same cache; ``num_workers`` then does not apply.
    """
    spec = _spec_of(spec_or_loaded)
    failed: dict[int, str] = {}
    if keys is None:
        keys, failed = content_keys(paths)
    elif len(keys) != len(paths):
        raise InvalidInputError(f"Got {len(keys)} keys for {len(paths)} image paths; give one key per path.")
    readable = [index for index in range(len(paths)) if index not in failed]
    store = VectorStore(model_cache_dir(spec, cache_root) / "images", spec.embed_dim)
    cached, missing = store.get_many([keys[index] for index in readable])
    thumbnails_missing = thumbnails_dir is not None and any(
        not thumbnail_exists(thumbnail_path(thumbnails_dir, keys[index])) for index in readable
    )
    embeddings = np.full((len(paths), spec.embed_dim), np.nan, dtype=np.float32)
    if not missing and not thumbnails_missing:
        embeddings[readable] = cached
        report(progress, image_encoding.STAGE, len(paths), len(paths))
        return ImageEncodingResult(embeddings, failed)

    common = dict(store=store, batch_size=batch_size, thumbnails_dir=thumbnails_dir, thumb_size=thumb_size,
                  progress=_shifted(progress, len(failed), len(paths)), cancel=cancel, precision=precision)
    readable_paths, readable_keys = [paths[index] for index in readable], [keys[index] for index in readable]
    if ray is not None:
        from .distributed import encode_images_on_ray

        result = encode_images_on_ray(spec, readable_paths, readable_keys, options=ray, device=device, **common)
    else:
        result = encode_images(_loaded(spec_or_loaded, device), readable_paths, readable_keys,
                               num_workers=num_workers, **common)
    embeddings[readable] = result.embeddings
    failed.update((readable[index], reason) for index, reason in result.failed.items())
    return ImageEncodingResult(embeddings, dict(sorted(failed.items())), result.precision, result.encoded)


def embed_vocabulary(
    spec_or_loaded: ModelSpec | LoadedModel,
    names: Iterable[str],
    templates: str | Iterable[str],
    cache_root: str | os.PathLike,
    device: str = "auto",
    batch_size: int = text_encoding.DEFAULT_BATCH_SIZE,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
    ray: Optional["RayOptions"] = None,
) -> np.ndarray:
    """(n, d) float32 embeddings of ``names`` (mean over ``templates``, normalised) in input order.

    Names are cached per model and template set; new names are encoded and written every few thousand
    names, so a cancelled run keeps what it finished. Progress counts distinct names. With ``ray``, the
    missing names are sharded over that Ray cluster's encoder actors (:mod:`tac_core.embedding.distributed`).
    """
    spec = _spec_of(spec_or_loaded)
    templates = template_set(templates)
    keys = [term_key(name) for name in names]
    folder = text_cache_dir(spec, templates, cache_root)
    if not (folder / "templates.json").exists():
        write_text(folder / "templates.json", json.dumps(list(templates), indent=2) + "\n")
    store = VectorStore(folder, spec.embed_dim)
    unique_keys = list(dict.fromkeys(keys))
    _, missing = store.get_many(unique_keys)
    report(progress, text_encoding.STAGE, len(unique_keys) - len(missing), len(unique_keys))
    if missing and ray is not None:
        from .distributed import encode_terms_on_ray

        encode_terms_on_ray(spec, missing, templates, store, ray, device=device, batch_size=batch_size,
                            progress=_shifted(progress, len(unique_keys) - len(missing), len(unique_keys)),
                            cancel=cancel)
    elif missing:
        loaded = _loaded(spec_or_loaded, device)
        for start in range(0, len(missing), _VOCABULARY_WRITE_CHUNK):
            chunk = missing[start:start + _VOCABULARY_WRITE_CHUNK]
            done_before = len(unique_keys) - len(missing) + start
            vectors = encode_vocabulary(loaded, chunk, templates, batch_size=batch_size, cancel=cancel,
                                        progress=_shifted(progress, done_before, len(unique_keys)))
            store.put_many(chunk, vectors)
    return store.get_many(keys)[0]


def _spec_of(spec_or_loaded: ModelSpec | LoadedModel) -> ModelSpec:
    if isinstance(spec_or_loaded, LoadedModel):
        return spec_or_loaded.spec
    if isinstance(spec_or_loaded, ModelSpec):
        return spec_or_loaded
    raise InvalidInputError(f"Expected a ModelSpec or LoadedModel, got {type(spec_or_loaded).__name__}.")


def _loaded(spec_or_loaded: ModelSpec | LoadedModel, device: str) -> LoadedModel:
    return spec_or_loaded if isinstance(spec_or_loaded, LoadedModel) else load_model(spec_or_loaded, device)


def _shifted(progress: Optional[ProgressFn], offset: int, total: int) -> Optional[ProgressFn]:
    """``progress`` for a sub-step whose counts start at ``offset`` of the whole step's ``total``."""
    if progress is None:
        return None
    return lambda stage, done, _: progress(stage, offset + done, total)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_LENGTH]
