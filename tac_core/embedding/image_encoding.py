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
``failed`` with its reason and the run goes on. On a CUDA GPU the workers only read plain JPEGs, which are
decoded and resized on the device (:mod:`~tac_core.embedding.device_decode`). The planning, per-file decoding
and batch encoding here are public because the Ray path (:mod:`~tac_core.embedding.distributed`) runs the same.
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
from .device_decode import DecodedBatch, DeviceJpegDecoder
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
    encoded: int = 0  # distinct images the model encoded (the rest came from the cache, or failed)

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
    validate_request(loaded.embed_dim, paths, keys, store, batch_size, thumb_size)
    if num_workers != "auto" and (not isinstance(num_workers, int) or num_workers < 0):
        raise InvalidInputError(f"num_workers must be 'auto' or an integer >= 0, got {num_workers!r}.")
    precision = resolve_precision(precision, loaded)
    plan = plan_encoding(paths, keys, store, thumbnails_dir, loaded.embed_dim)
    groups, embeddings, work, failed, done = plan.groups, plan.embeddings, plan.work, plan.failed, plan.done
    report(progress, STAGE, done, len(paths))
    if not work:
        return ImageEncodingResult(embeddings, failed)

    device = loaded.device
    device_jpeg = DeviceJpegDecoder.for_model(loaded.preprocess, device)
    loader = DataLoader(
        _DecodeDataset(work, loaded.preprocess, thumb_size, decode_min_side(loaded.model, thumb_size), device_jpeg),
        batch_size=batch_size,
        shuffle=False,
        num_workers=_worker_count(num_workers, len(work), batch_size, device),
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    in_process = loader.num_workers == 0
    encoded = 0
    batches = iter(loader)
    while True:
        with single_cpu_thread("cpu") if in_process else contextlib.nullcontext():  # decoding here: one thread
            batch = next(batches, None)
        if batch is None:
            break
        check_cancel(cancel)
        positions, images, failures = batch.positions, batch.images, batch.failures
        if batch.jpegs:  # plain JPEGs the workers left to the device decoder
            positions, images, failures = device_jpeg.merge(batch, loader.dataset.decode_with_pil, device)
        for position, reason in failures:
            indices = groups[work[position].key]
            failed.update((index, reason) for index in indices)
            done += len(indices) if work[position].embed else 0
        if images is not None:
            vectors = encode_image_batch(loaded, images, precision)
            batch_keys = [work[position].key for position in positions]
            if store is not None:
                store.put_many(batch_keys, vectors)
            for vector, group_key in zip(vectors, batch_keys):
                embeddings[groups[group_key]] = vector
                done += len(groups[group_key])
            encoded += len(batch_keys)
        report(progress, STAGE, done, len(paths))
    for index in failed:
        embeddings[index] = np.nan  # a failed thumbnail of a cached image still marks the file as failed
    used = precision_label(precision, device) if any(item.embed for item in work) else None
    return ImageEncodingResult(embeddings, dict(sorted(failed.items())), used, encoded)


def precision_label(precision: str, device: torch.device) -> str:
    """What a resolved ``precision`` encodes in on ``device``: ``"auto"`` is fp16 autocast on CUDA, else fp32."""
    return {"auto": "fp16" if device.type == "cuda" else "fp32"}.get(precision, precision)


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


def encode_image_batch(loaded: LoadedModel, images: torch.Tensor, precision: str = "auto") -> np.ndarray:
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


def decode_min_side(model: torch.nn.Module, thumb_size: int) -> Optional[int]:
    """The smallest side JPEG decoding may reduce an image to: twice the model's input side (and no less than
    the thumbnail), or None (no reduction) when the input side is unknown."""
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if isinstance(size, (tuple, list)) and size and all(isinstance(v, int) for v in size):
        size = max(size)
    return max(2 * size, thumb_size) if isinstance(size, int) else None


class WorkItem(NamedTuple):
    path: Path
    key: object
    embed: bool  # False: the vector is cached, only the thumbnail is missing
    thumbnail: Optional[Path]


@dataclass
class EncodingPlan:
    """What is left to do for a list of paths: ``work`` has one item per distinct key whose vector or thumbnail is
    missing; ``groups`` maps each key to its rows; ``embeddings`` holds the cached rows; ``done`` counts rows
    already finished (cached, or unreadable: ``failed``)."""

    groups: dict[object, list[int]]
    embeddings: np.ndarray
    work: list[WorkItem]
    failed: dict[int, str]
    done: int


def plan_encoding(paths: Sequence[str | os.PathLike], keys: Optional[Sequence[str]], store: Optional[VectorStore],
                  thumbnails_dir: Optional[str | os.PathLike], dim: int) -> EncodingPlan:
    """Group rows by content key (one decode per key), copy cached vectors in, and list the work that is left."""
    paths = [Path(p) for p in paths]
    failed: dict[int, str] = {}
    if keys is None and (store is not None or thumbnails_dir is not None):
        keys, failed = content_keys(paths)
    if keys is not None and thumbnails_dir is not None:
        check_thumbnail_keys(keys)
    groups: dict[object, list[int]] = {}
    for index in range(len(paths)):
        if index not in failed:
            groups.setdefault(keys[index] if keys is not None else index, []).append(index)
    embeddings = np.full((len(paths), dim), np.nan, dtype=np.float32)
    cached_keys: set = set()
    if store is not None:
        vectors, missing = store.get_many(list(groups))
        cached_keys = set(groups) - set(missing)
        for vector, group_key in zip(vectors, groups):
            if group_key in cached_keys:
                embeddings[groups[group_key]] = vector
    work = []
    for group_key, indices in groups.items():
        thumbnail = None if thumbnails_dir is None else thumbnail_path(thumbnails_dir, str(group_key))
        if thumbnail is not None and thumbnail_exists(thumbnail):
            thumbnail = None
        if group_key not in cached_keys or thumbnail is not None:
            work.append(WorkItem(paths[indices[0]], group_key, group_key not in cached_keys, thumbnail))
    done = len(paths) - sum(len(groups[item.key]) for item in work if item.embed)
    return EncodingPlan(groups, embeddings, work, failed, done)


def decode_item(item: WorkItem, preprocess: Callable[[Image.Image], torch.Tensor], min_side: Optional[int],
                device_jpeg: Optional[DeviceJpegDecoder] = None) -> tuple[object, Optional[Image.Image]]:
    """What one work item gives the model: the file's bytes when the device decoder takes it, else its
    preprocessed tensor (None when only the thumbnail is missing); and the decoded image when the thumbnail is
    missing. Raises on a file that cannot be used: :func:`failure_reason` says why."""
    if device_jpeg is not None and item.embed and item.thumbnail is None:
        data = device_jpeg.read(item.path)
        if data is not None:
            return data, None
    image = open_image_rgb(item.path, min_side=min_side)
    tensor = preprocess(crop_extreme_aspect(image)) if item.embed else None
    return tensor, image if item.thumbnail is not None else None


def failure_reason(path: str | os.PathLike, exc: Exception) -> str:
    """The skipped-file reason of a file whose decoding raised ``exc`` (the same on every path that embeds)."""
    if isinstance(exc, ImageDecodeError):
        return str(exc)
    return f"{path}: {type(exc).__name__}: {exc}"


class _DecodeDataset(Dataset):
    """Runs in the worker processes: decode once, write the thumbnail, preprocess."""

    def __init__(self, work: list[WorkItem], preprocess: Callable[[Image.Image], torch.Tensor], thumb_size: int,
                 min_side: Optional[int] = None, device_jpeg: Optional[DeviceJpegDecoder] = None):
        self.work = work
        self.preprocess = preprocess
        self.thumb_size = thumb_size
        self.min_side = min_side
        self.device_jpeg = device_jpeg

    def __len__(self) -> int:
        return len(self.work)

    def __getitem__(self, position: int) -> tuple[int, object, Optional[str]]:
        return (position, *self._decode(position, self.device_jpeg))

    def decode_with_pil(self, position: int) -> tuple[object, Optional[str]]:
        """The item at ``position`` decoded here by PIL: for a JPEG the device decoder refused."""
        return self._decode(position, None)

    def _decode(self, position: int, device_jpeg: Optional[DeviceJpegDecoder]) -> tuple[object, Optional[str]]:
        item = self.work[position]
        try:
            pixels, image = decode_item(item, self.preprocess, self.min_side, device_jpeg)
            if image is not None:
                write_thumbnail(image, item.thumbnail, self.thumb_size)
        except Exception as exc:  # any per-file failure is reported, never fatal to the run
            return None, failure_reason(item.path, exc)
        return pixels, None


def _collate(samples: list[tuple[int, object, Optional[str]]]) -> DecodedBatch:
    encoded = [(position, pixels) for position, pixels, _ in samples if isinstance(pixels, torch.Tensor)]
    failures = [(position, reason) for position, _, reason in samples if reason is not None]
    images = torch.stack([tensor for _, tensor in encoded]) if encoded else None
    jpegs = [(position, pixels) for position, pixels, _ in samples if isinstance(pixels, bytes)]
    return DecodedBatch([position for position, _ in encoded], images, failures, jpegs)


def _worker_count(num_workers: int | str, items: int, batch_size: int, device: torch.device) -> int:
    """On a GPU decoding is the bottleneck (8 workers doubled the images/s of 4 on an H100 box); on the CPU the
    model is (ViT-B-32: ~30× slower than decoding), and worker processes would only take its cores."""
    if num_workers != "auto":
        return int(num_workers)
    if device.type == "cpu" or items <= batch_size:
        return 0
    batches = -(-items // batch_size)
    return max(1, min(_MAX_AUTO_WORKERS, (os.cpu_count() or 2) - 1, batches))


def validate_request(dim: int, paths, keys, store: Optional[VectorStore], batch_size, thumb_size) -> None:
    """The checks every image embedding path makes before any work."""
    if keys is not None and len(keys) != len(paths):
        raise InvalidInputError(f"Got {len(keys)} keys for {len(paths)} image paths; give one key per path.")
    if store is not None and store.dim != dim:
        raise InvalidInputError(f"Cache {store.folder} holds vectors of length {store.dim} but the model makes {dim}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not isinstance(thumb_size, int) or thumb_size < 16:
        raise InvalidInputError(f"thumb_size must be an integer of at least 16 pixels, got {thumb_size!r}.")
