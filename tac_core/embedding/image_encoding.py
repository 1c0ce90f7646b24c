"""Image embedding pipeline: decode and preprocess in DataLoader workers, encode batches on the device.

Workers decode each file once and make its thumbnail from the same decoded image (JPEGs decode at a reduced
scale that keeps twice the model's input size, thumbnails are renamed into place without an fsync: they can
be made again). On the CPU the model runs on micro-batches of at most :data:`CPU_MICRO_BATCH` and decoding in
this process runs on one thread (see :func:`encode_images`). ``precision="bf16"`` runs a bfloat16 copy of the
image tower: on CPUs with AMX matrix units (Intel Xeon 4th generation and later) ViT-B-32 then takes ~8 ms an
image instead of ~40 (fp32 is compute-bound there), with unit embeddings within ~2e-3 of fp32 (cosine
> 0.9999), the same trade as fp16 on a GPU, so ``"auto"`` chooses it on such CPUs; without AMX it is slower
than fp32 and ``"auto"`` stays in fp32. Every finished batch is
written to the :class:`~tac_core.embedding.cache.VectorStore` at once, so a crash or cancel loses at most one batch,
and files whose vector is cached are not decoded at all. A file that cannot be decoded is reported in
``failed`` with its reason and the run goes on.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .cache import VectorStore, sha256_file
from ..errors import InvalidInputError
from ..inputs.image_decode import crop_extreme_aspect
from ..inputs.imageset import ImageDecodeError, open_image_rgb
from ..inputs.thumbnails import check_thumbnail_keys, thumbnail_exists, thumbnail_path, write_thumbnail
from .models import LoadedModel, inference_context
from ..numerics import single_cpu_thread
from ..progress import CancelToken, ProgressFn, check_cancel, report

STAGE = "embedding images"
PRECISIONS = ("auto", "fp32", "bf16")
PRECISION_ENV = "TAC_STUDIO_IMAGE_PRECISION"  # what "auto" means when set: fp32 or bf16
DEFAULT_BATCH_SIZE = 64
CPU_MICRO_BATCH = 32  # ViT-B-32, 2-core Xeon: 37 ms/image at 8-32 images a pass, 48 at 64, 61 at 1
_MAX_AUTO_WORKERS = 8


@dataclass(frozen=True)
class ImageEncodingResult:
    """``embeddings``: (n, d) float32, L2-normalised rows in input order; rows of ``failed`` files are NaN,
    so they cannot slip into clustering unnoticed. ``failed``: input index → reason."""

    embeddings: np.ndarray
    failed: dict[int, str]
    precision: Optional[str] = None  # what encoded the new vectors (fp32, bf16, fp16); None: nothing was encoded

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the rows that hold an embedding."""
        mask = np.ones(len(self.embeddings), dtype=bool)
        mask[list(self.failed)] = False
        return mask


def content_keys(paths: Sequence[str | os.PathLike]) -> tuple[list[Optional[str]], dict[int, str]]:
    """The sha256 of each file's bytes (its cache key), and index → reason for files that cannot be read."""
    keys: list[Optional[str]] = []
    failed: dict[int, str] = {}
    for index, path in enumerate(paths):
        try:
            keys.append(sha256_file(path))
        except OSError as exc:
            keys.append(None)
            failed[index] = f"{os.fspath(path)}: cannot be read ({exc.strerror or exc})"
    return keys, failed


def encode_images(
    loaded: LoadedModel,
    paths: Sequence[str | os.PathLike],
    keys: Optional[Sequence[str]] = None,
    store: Optional[VectorStore] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | str = "auto",
    thumbnails_dir: Optional[str | os.PathLike] = None,
    thumb_size: int = 256,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
    precision: str = "auto",
) -> ImageEncodingResult:
    """Embed the images at ``paths`` with ``loaded``'s image tower.

    ``keys`` (default: the files' content sha256, computed when a ``store`` or ``thumbnails_dir`` needs
    them) name each image in ``store`` and its thumbnail ``<key>.jpg`` (JPEG, longest side ``thumb_size``).
    Files with the same key are decoded and encoded once. ``num_workers="auto"`` uses up to 8 decoding
    processes on a GPU (leaving a core to this process), and none on the CPU or when all fits in one batch.

    On the CPU, decoding in this process runs on one torch thread: turning a decoded image into a tensor took
    7.5 ms on two threads and 0.7 ms on one (OpenMP threads spin-waiting on a busy machine), more than a
    fifth of the model's own time per image. The model keeps all threads.

    ``precision``: ``"auto"`` (fp16 autocast on CUDA, bf16 on a CPU with AMX, fp32 elsewhere; the environment
    variable ``TAC_STUDIO_IMAGE_PRECISION=bf16|fp32`` overrides it), ``"fp32"``, or ``"bf16"`` (see the module
    docstring).
    """
    paths = [Path(p) for p in paths]
    _validate(loaded, paths, keys, store, batch_size, num_workers, thumb_size)
    precision = resolve_precision(precision, loaded)
    failed: dict[int, str] = {}
    if keys is None and (store is not None or thumbnails_dir is not None):
        keys, failed = content_keys(paths)
    if keys is not None and thumbnails_dir is not None:
        check_thumbnail_keys(keys)
    groups: dict[object, list[int]] = {}  # one decode per distinct key; rows that share it
    for index in range(len(paths)):
        if index not in failed:
            groups.setdefault(keys[index] if keys is not None else index, []).append(index)

    embeddings = np.full((len(paths), loaded.embed_dim), np.nan, dtype=np.float32)
    cached_keys = _fill_from_store(store, groups, embeddings)
    work = _plan_work(paths, groups, cached_keys, thumbnails_dir)

    done = len(paths) - sum(len(groups[item.key]) for item in work if item.embed)
    report(progress, STAGE, done, len(paths))
    if not work:
        return ImageEncodingResult(embeddings, failed)

    device = loaded.device
    loader = DataLoader(
        _DecodeDataset(work, loaded.preprocess, thumb_size, _decode_min_side(loaded)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=_worker_count(num_workers, len(work), batch_size, device),
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    in_process = loader.num_workers == 0
    batches = iter(loader)
    while True:
        with single_cpu_thread("cpu") if in_process else contextlib.nullcontext():  # decoding here: one thread
            batch = next(batches, None)
        if batch is None:
            break
        check_cancel(cancel)
        for position, reason in batch.failures:
            indices = groups[work[position].key]
            failed.update((index, reason) for index in indices)
            done += len(indices) if work[position].embed else 0
        if batch.images is not None:
            vectors = _encode_batch(loaded, batch.images, precision)
            batch_keys = [work[position].key for position in batch.positions]
            if store is not None:
                store.put_many(batch_keys, vectors)
            for vector, group_key in zip(vectors, batch_keys):
                embeddings[groups[group_key]] = vector
                done += len(groups[group_key])
        report(progress, STAGE, done, len(paths))
    for index in failed:
        embeddings[index] = np.nan  # a failed thumbnail of a cached image still marks the file as failed
    used = ({"auto": "fp16" if device.type == "cuda" else "fp32"}.get(precision, precision)
            if any(item.embed for item in work) else None)
    return ImageEncodingResult(embeddings, dict(sorted(failed.items())), used)


def resolve_precision(precision: str, loaded: Optional[LoadedModel] = None) -> str:
    """``"auto"``, ``"fp32"`` or ``"bf16"``, checked. ``"auto"`` becomes the value of
    ``TAC_STUDIO_IMAGE_PRECISION`` when it is set, else ``"bf16"`` for an open_clip model on a CPU with AMX."""
    if precision == "auto":
        precision = os.environ.get(PRECISION_ENV, "").strip().lower() or "auto"
    if precision not in PRECISIONS:
        raise InvalidInputError(f"image precision must be one of {', '.join(PRECISIONS)}; got {precision!r} "
                                f"(check {PRECISION_ENV}).")
    if (precision == "auto" and loaded is not None and loaded.device.type == "cpu" and cpu_has_amx()
            and _has_bf16_tower(loaded.model)):
        return "bf16"
    return precision


@functools.lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """True when this CPU has AMX bfloat16 matrix units (Linux: the ``amx_bf16`` flag in /proc/cpuinfo)."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text(errors="replace").split()
    except OSError:
        return False


def _encode_batch(loaded: LoadedModel, images: torch.Tensor, precision: str = "auto") -> np.ndarray:
    """Unit image vectors of a batch; on the CPU in micro-batches of at most :data:`CPU_MICRO_BATCH`."""
    device = loaded.device
    step = CPU_MICRO_BATCH if device.type == "cpu" and precision != "bf16" else len(images)
    tower = _bf16_tower(loaded.model) if precision == "bf16" else None
    context = torch.inference_mode() if precision != "auto" else inference_context(device)
    parts = []
    with context:
        for start in range(0, len(images), step):
            batch = images[start:start + step].to(device, non_blocking=True)
            if tower is not None:
                features = tower(batch.to(torch.bfloat16))
            elif precision == "bf16":  # another model class: let autocast cast each layer
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    features = loaded.model.encode_image(batch)
            else:
                features = loaded.model.encode_image(batch)
            parts.append(F.normalize(features.float(), dim=-1))
    return torch.cat(parts).cpu().numpy()


_BF16_TOWERS: "weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module]" = weakref.WeakKeyDictionary()


def _bf16_tower(model: torch.nn.Module) -> Optional[torch.nn.Module]:
    """A bfloat16 copy of the image tower of an open_clip model whose ``encode_image`` is ``visual(x)``, made
    once per model (autocast would cast every weight on every call, which cost more than it saved)."""
    if not _has_bf16_tower(model):
        return None
    if model not in _BF16_TOWERS:
        _BF16_TOWERS[model] = copy.deepcopy(model.visual).to(torch.bfloat16).eval()
    return _BF16_TOWERS[model]


def _has_bf16_tower(model: torch.nn.Module) -> bool:
    return type(model).encode_image in (open_clip.CLIP.encode_image, open_clip.CustomTextCLIP.encode_image)


def _decode_min_side(loaded: LoadedModel) -> Optional[int]:
    """Twice the model's input side (what JPEG decoding may reduce to), or None when it is unknown."""
    size = getattr(getattr(loaded.model, "visual", None), "image_size", None)
    if isinstance(size, int):
        return 2 * size
    if isinstance(size, (tuple, list)) and size and all(isinstance(v, int) for v in size):
        return 2 * max(size)
    return None


def _fill_from_store(
    store: Optional[VectorStore], groups: dict[object, list[int]], embeddings: np.ndarray
) -> set:
    """Copy cached vectors into their rows; returns the keys that were cached."""
    if store is None:
        return set()
    vectors, missing = store.get_many(list(groups))
    cached_keys = set(groups) - set(missing)
    for vector, group_key in zip(vectors, groups):
        if group_key in cached_keys:
            embeddings[groups[group_key]] = vector
    return cached_keys


def _plan_work(paths: list[Path], groups: dict[object, list[int]], cached_keys: set,
               thumbnails_dir: Optional[str | os.PathLike]) -> list[_WorkItem]:
    """One item per key whose vector or thumbnail is missing, read from the first file with that key."""
    work = []
    for group_key, indices in groups.items():
        thumbnail = None if thumbnails_dir is None else thumbnail_path(thumbnails_dir, str(group_key))
        if thumbnail is not None and thumbnail_exists(thumbnail):
            thumbnail = None
        if group_key not in cached_keys or thumbnail is not None:
            work.append(_WorkItem(paths[indices[0]], group_key, group_key not in cached_keys, thumbnail))
    return work


class _WorkItem(NamedTuple):
    path: Path
    key: object
    embed: bool  # False: the vector is cached, only the thumbnail is missing
    thumbnail: Optional[Path]


class _Batch(NamedTuple):
    positions: list[int]  # positions in the work list of the rows of ``images``
    images: Optional[torch.Tensor]
    failures: list[tuple[int, str]]


class _DecodeDataset(Dataset):
    """Runs in the worker processes: decode once, write the thumbnail, preprocess."""

    def __init__(self, work: list[_WorkItem], preprocess: Callable[[Image.Image], torch.Tensor], thumb_size: int,
                 min_side: Optional[int] = None):
        self.work = work
        self.preprocess = preprocess
        self.thumb_size = thumb_size
        self.min_side = None if min_side is None else max(min_side, thumb_size)

    def __len__(self) -> int:
        return len(self.work)

    def __getitem__(self, position: int) -> tuple[int, Optional[torch.Tensor], Optional[str]]:
        item = self.work[position]
        try:
            image = open_image_rgb(item.path, min_side=self.min_side)
            tensor = self.preprocess(crop_extreme_aspect(image)) if item.embed else None
            if item.thumbnail is not None:
                write_thumbnail(image, item.thumbnail, self.thumb_size)
        except ImageDecodeError as exc:
            return position, None, str(exc)
        except Exception as exc:  # any per-file failure is reported, never fatal to the run
            return position, None, f"{item.path}: {type(exc).__name__}: {exc}"
        return position, tensor, None


def _collate(samples: list[tuple[int, Optional[torch.Tensor], Optional[str]]]) -> _Batch:
    encoded = [(position, tensor) for position, tensor, reason in samples if tensor is not None]
    failures = [(position, reason) for position, _, reason in samples if reason is not None]
    images = torch.stack([tensor for _, tensor in encoded]) if encoded else None
    return _Batch([position for position, _ in encoded], images, failures)


def _worker_count(num_workers: int | str, items: int, batch_size: int, device: torch.device) -> int:
    """On a GPU decoding is the bottleneck (8 workers doubled the images/s of 4 on an H100 box); on the CPU the
    model is (ViT-B-32: ~30× slower than decoding), and worker processes would only take its cores."""
    if num_workers != "auto":
        return int(num_workers)
    if device.type == "cpu" or items <= batch_size:
        return 0
    batches = -(-items // batch_size)
    return max(1, min(_MAX_AUTO_WORKERS, (os.cpu_count() or 2) - 1, batches))


def _validate(loaded, paths, keys, store, batch_size, num_workers, thumb_size) -> None:
    if keys is not None and len(keys) != len(paths):
        raise InvalidInputError(f"Got {len(keys)} keys for {len(paths)} image paths; give one key per path.")
    if store is not None and store.dim != loaded.embed_dim:
        raise InvalidInputError(
            f"Cache {store.folder} holds vectors of length {store.dim} but {loaded.spec} makes {loaded.embed_dim}."
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if num_workers != "auto" and (not isinstance(num_workers, int) or num_workers < 0):
        raise InvalidInputError(f"num_workers must be 'auto' or an integer >= 0, got {num_workers!r}.")
    if not isinstance(thumb_size, int) or thumb_size < 16:
        raise InvalidInputError(f"thumb_size must be an integer of at least 16 pixels, got {thumb_size!r}.")
