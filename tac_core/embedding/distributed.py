"""Embedding on a Ray cluster: the single-machine vectors, from many machines, into the same cache.

Ray Data reads, decodes and preprocesses the images in parallel CPU tasks anywhere in the cluster; a pool of
encoder actors holds one model each (one GPU each where the cluster has GPUs, or ``gpus_per_worker`` of one);
the vectors stream back to this process (the *driver*), which writes them to the same
:class:`~tac_core.embedding.cache.VectorStore` as the single-machine path, one batch at a time. So a later run on
one machine finds them, and a killed job run again encodes only what is missing. The decoding, preprocessing,
encoding and skip reasons are the single-machine functions themselves (:func:`.image_encoding.decode_item`,
:func:`.image_encoding.failure_reason`, :func:`.image_encoding.encode_image_batch`), so vectors agree with the
single-machine path's in the same precision, and a file is skipped for the same reason. Vocabulary terms are
sharded the same way over text encoder actors.

What runs where: the driver plans the work from the cache (which stays on its disk), writes vectors, thumbnails
and progress. The images must be readable at the same path on every machine (a shared mount), and so must the
model's weights (a checkpoint on the mount, or each machine's open_clip cache). ``tac_core`` itself travels with
the job (Ray ``py_modules``): the machines need only the packages of requirements.txt and Ray. Decoding stays on
CPU tasks here (the GPU decoder of :mod:`.device_decode` serves the single-machine path).

Ray is imported only on these paths: without it nothing changes for a single machine.
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..atomic import write_bytes
from ..inputs.thumbnails import thumbnail_jpeg
from ..progress import CancelToken, ProgressFn, check_cancel, report
from . import image_encoding, text_encoding
from .cache import VectorStore
from .image_encoding import ImageEncodingResult, WorkItem
from .models import ModelSpec, build_architecture, load_model
from .ray_cluster import RayOptions, encoder_pool, import_ray, ray_session

DECODE_BATCH = 16  # images a decoding task hands on at a time
DECODE_MEMORY = 1 << 30  # what a decoding task reserves: its worker with torch loaded (~0.5 GB), and a
# 100-megapixel image (300 MB of RGB). Reserving it also keeps Ray Data from fusing decoding into the encoder
# actors, where it would no longer run in parallel.
_MAX_BLOCKS = 2000  # input blocks of a dataset: enough to spread work, few enough to schedule cheaply
_TEXT_SHARD = 2048  # terms an encoder actor embeds per call: the driver caches each shard when it returns


# ------------------------------------------------------------------------------------------------- images

def encode_images_on_ray(
    spec: ModelSpec,
    paths: Sequence[str | os.PathLike],
    keys: Optional[Sequence[str]],
    store: Optional[VectorStore],
    options: RayOptions,
    device: str = "auto",
    batch_size: int = image_encoding.DEFAULT_BATCH_SIZE,
    thumbnails_dir: Optional[str | os.PathLike] = None,
    thumb_size: int = 256,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
    precision: str = "auto",
) -> ImageEncodingResult:
    """:func:`~tac_core.embedding.image_encoding.encode_images` on a Ray cluster (same arguments and result;
    ``device`` is what each actor asks for). Ray is not contacted when nothing is missing."""
    image_encoding.validate_request(spec.embed_dim, paths, keys, store, batch_size, thumb_size)
    precision = image_encoding.resolve_precision(precision)  # here: checked, and the environment applied
    plan = image_encoding.plan_encoding(paths, keys, store, thumbnails_dir, spec.embed_dim)
    report(progress, image_encoding.STAGE, plan.done, len(paths))
    if not plan.work:
        return ImageEncodingResult(plan.embeddings, plan.failed)
    model, preprocess = build_architecture(spec, "meta")  # the transform only: no weights on the driver
    decode_args = {"preprocess": preprocess, "min_side": image_encoding.decode_min_side(model, thumb_size),
                   "thumb_size": thumb_size, "shape": tuple(preprocess(Image.new("RGB", (64, 64))).shape)}
    rows = [{"position": index, "path": str(item.path), "embed": item.embed, "thumbnail": item.thumbnail is not None}
            for index, item in enumerate(plan.work)]
    results = _Results(plan, store)
    with ray_session(options):
        ray = import_ray()
        pool = encoder_pool(options, device)
        blocks, decode_batch = _layout(len(rows), DECODE_BATCH)
        dataset = ray.data.from_items(rows, override_num_blocks=blocks)
        dataset = dataset.map_batches(_decode_images, fn_kwargs=decode_args, batch_size=decode_batch,
                                      batch_format="numpy", num_cpus=pool.decode_cpus, memory=DECODE_MEMORY)
        dataset = dataset.map_batches(**pool.map_args(
            _ImageEncoder, {"spec": spec, "device": device, "precision": precision,
                            "threads": max(1, int(pool.cpus_per_worker))}, batch_size))
        with _streamed(dataset) as batches:
            for batch in batches:
                check_cancel(cancel)
                results.add(batch)
                report(progress, image_encoding.STAGE, results.done, len(paths))
    return results.result()


class _Results:
    """The driver's side of an image run: each batch from the actors into the rows, the cache and the thumbnails
    (as :func:`~tac_core.embedding.image_encoding.encode_images` does with its own batches)."""

    def __init__(self, plan: image_encoding.EncodingPlan, store: Optional[VectorStore]) -> None:
        self.plan, self.store = plan, store
        self.done, self.encoded, self.precision = plan.done, 0, None

    def add(self, batch: dict) -> None:
        work, groups, failed = self.plan.work, self.plan.groups, self.plan.failed
        for position, reason, thumbnail, ok, vector in zip(batch["position"], batch["reason"], batch["thumbnail"],
                                                           batch["encoded"], batch["vector"]):
            item = work[int(position)]
            if reason:
                failed.update((index, str(reason)) for index in groups[item.key])
                self.done += len(groups[item.key]) if item.embed else 0
                continue
            if thumbnail:
                write_bytes(item.thumbnail, bytes(thumbnail), durable=False)  # as write_thumbnail: no fsync
            if ok:
                self.plan.embeddings[groups[item.key]] = vector
                self.done += len(groups[item.key])
        kept = np.flatnonzero(batch["encoded"])
        if len(kept) and self.store is not None:
            self.store.put_many([work[int(batch["position"][i])].key for i in kept], batch["vector"][kept])
        if len(kept):
            self.encoded, self.precision = self.encoded + len(kept), str(batch["precision"][kept[0]])

    def result(self) -> ImageEncodingResult:
        embeddings, failed = self.plan.embeddings, self.plan.failed
        for index in failed:
            embeddings[index] = np.nan  # a failed thumbnail of a cached image still marks the file as failed
        return ImageEncodingResult(embeddings, dict(sorted(failed.items())), self.precision, self.encoded)


def _decode_images(batch: dict, preprocess, min_side: Optional[int], thumb_size: int, shape: tuple) -> dict:
    """A Ray Data task: decode and preprocess a batch of files, as the single-machine workers do."""
    size = len(batch["position"])
    pixels = np.zeros((size, *shape), dtype=np.float32)  # rows of failed or thumbnail-only files stay zero
    reasons, thumbnails = np.full(size, "", dtype=object), np.full(size, b"", dtype=object)
    for row, (path, embed, wants_thumbnail) in enumerate(zip(batch["path"], batch["embed"], batch["thumbnail"])):
        # the thumbnail is made here and written by the driver: any path in ``thumbnail`` asks for it
        item = WorkItem(Path(path), None, bool(embed), Path(path) if wants_thumbnail else None)
        try:
            tensor, image = image_encoding.decode_item(item, preprocess, min_side)
            if tensor is not None:
                pixels[row] = tensor.numpy()
            if image is not None:
                thumbnails[row] = thumbnail_jpeg(image, thumb_size)
        except Exception as exc:  # any per-file failure is reported, never fatal to the run
            reasons[row] = image_encoding.failure_reason(path, exc)
    return {"position": batch["position"], "pixels": pixels, "reason": reasons, "thumbnail": thumbnails,
            "embed": batch["embed"]}


class _ImageEncoder:
    """A Ray actor holding the image tower on its device (a GPU Ray gave it, else its CPU cores)."""

    def __init__(self, spec: ModelSpec, device: str, precision: str, threads: int) -> None:
        torch.set_num_threads(threads)
        self.loaded = load_model(spec, device)
        self.precision = image_encoding.resolve_precision(precision, self.loaded)
        self.label = image_encoding.precision_label(self.precision, self.loaded.device)

    def __call__(self, batch: dict) -> dict:
        ok = (batch["reason"] == "") & batch["embed"].astype(bool)
        vectors = np.zeros((len(ok), self.loaded.embed_dim), dtype=np.float32)
        if ok.any():
            images = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok]))
            vectors[ok] = image_encoding.encode_image_batch(self.loaded, images, self.precision)
        return {"position": batch["position"], "vector": vectors, "reason": batch["reason"],
                "thumbnail": batch["thumbnail"], "encoded": ok, "precision": np.full(len(ok), self.label)}


# --------------------------------------------------------------------------------------------- vocabulary

def encode_terms_on_ray(
    spec: ModelSpec,
    terms: Sequence[str],
    templates: tuple[str, ...],
    store: VectorStore,
    options: RayOptions,
    device: str = "auto",
    batch_size: int = text_encoding.DEFAULT_BATCH_SIZE,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
) -> None:
    """Encode ``terms`` (cache keys not in ``store``) as :func:`~tac_core.embedding.text_encoding.encode_vocabulary`
    does, sharded over the encoder actors; each shard is cached as soon as it returns. Progress counts terms."""
    if not terms:
        return
    with ray_session(options):
        ray = import_ray()
        pool = encoder_pool(options, device)
        blocks, shard = _layout(len(terms), min(_TEXT_SHARD, math.ceil(len(terms) / pool.workers)))
        dataset = ray.data.from_items([{"term": term} for term in terms], override_num_blocks=blocks)
        dataset = dataset.map_batches(**pool.map_args(
            _TextEncoder, {"spec": spec, "device": device, "templates": templates, "batch_size": batch_size,
                           "threads": max(1, int(pool.cpus_per_worker))}, shard))
        done = 0
        report(progress, text_encoding.STAGE, done, len(terms))
        with _streamed(dataset) as batches:
            for batch in batches:
                check_cancel(cancel)
                store.put_many([str(term) for term in batch["term"]], batch["vector"])
                done += len(batch["term"])
                report(progress, text_encoding.STAGE, done, len(terms))


class _TextEncoder:
    """A Ray actor holding the text tower on its device."""

    def __init__(self, spec: ModelSpec, device: str, templates: tuple[str, ...], batch_size: int,
                 threads: int) -> None:
        torch.set_num_threads(threads)
        self.loaded, self.templates, self.batch_size = load_model(spec, device), templates, batch_size

    def __call__(self, batch: dict) -> dict:
        terms = [str(term) for term in batch["term"]]
        vectors = text_encoding.encode_vocabulary(self.loaded, terms, self.templates, batch_size=self.batch_size)
        return {"term": batch["term"], "vector": vectors}


# ------------------------------------------------------------------------------------------------ helpers

def _layout(rows: int, per_block: int) -> tuple[int, int]:
    """Input blocks of about ``per_block`` rows (at most :data:`_MAX_BLOCKS`), and a batch size no larger than the
    smallest block: Ray Data bundles blocks smaller than a batch into one task, which would serialise the work."""
    blocks = max(1, min(_MAX_BLOCKS, math.ceil(rows / max(per_block, 1))))
    return blocks, max(1, min(per_block, rows // blocks))


@contextlib.contextmanager
def _streamed(dataset) -> Iterator[Iterator[dict]]:
    """The dataset's output batches as they finish (any order); leaving the block early (a cancel, an error)
    stops the dataset's work at once, also on a Ray that stays connected."""
    batches = iter(dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1))
    try:
        yield batches
    finally:
        getattr(batches, "close", lambda: None)()
