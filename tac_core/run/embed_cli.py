"""``python -m tac_core embed``: embed a folder, a file list or a workspace's images (and, if asked, a
vocabulary) into the shared embedding cache, on this machine or on a Ray cluster, and write the vectors.

Output folder (written at the end, each file atomically, ``run.json`` last): ``embeddings.npy`` (float32 unit
rows), ``paths.txt`` (the file of each row), ``skipped.csv`` (path, reason of every file without a row) and
``run.json`` (model identity, precision, counts, seconds, workers); with ``--vocab`` or ``--wordnet`` also
``vocab_embeddings.npy`` and ``vocab.txt``, the form ``cluster --image-embeddings`` reads. With ``--workspace``
the vectors go to the workspace's own cache, so its next run on the Cluster page embeds nothing, and its Ray
address setting applies unless ``--ray`` is given.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .. import atomic
from ..devices import DEVICES
from ..errors import InvalidInputError
from ..progress import ProgressFn

REASON_LINE_BREAK = "the file name holds a line break, which paths.txt cannot list; rename the file"


def add_parser(commands, default_cache: Path) -> None:
    """Register ``embed`` on the CLI's sub-command parsers."""
    embed = commands.add_parser(
        "embed", help="embed images (and a vocabulary) into the cache, on this machine or a Ray cluster",
        description="Exactly one of --images DIR, --files LIST or --workspace PATH; writes OUT/embeddings.npy, "
                    "paths.txt, skipped.csv and run.json.")
    images = embed.add_argument_group("images")
    images.add_argument("--images", type=Path, help="folder of images (searched recursively)")
    images.add_argument("--files", type=Path, help="text file naming one image file per line")
    images.add_argument("--workspace", type=Path, help="a TAC Studio workspace folder: its usable images, into its "
                                                       "own cache")
    model = embed.add_argument_group("model")
    model.add_argument("--model", default="ViT-B-32",
                       help="open_clip model name, 'local-dir:FOLDER', or a model config .json (default ViT-B-32)")
    model.add_argument("--pretrained", default="openai",
                       help="open_clip weights tag (default openai); 'none' = random weights, smoke tests only")
    model.add_argument("--checkpoint", type=Path, help="local weights file (overrides --pretrained)")
    model.add_argument("--device", default="auto", choices=DEVICES,
                       help="with --ray: what each encoder worker uses")
    model.add_argument("--cache", type=Path,
                       help=f"embedding cache (default {default_cache}; with --workspace its own)")
    model.add_argument("--batch-size", type=int, default=64, help="images encoded at once (default 64)")
    model.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                       help="image tower precision (default auto: fp16 on CUDA, bf16 on CPUs with AMX, else fp32)")
    vocab = embed.add_argument_group("vocabulary (optional)")
    vocab.add_argument("--vocab", type=Path, help="terms to embed (.txt or .csv)")
    vocab.add_argument("--wordnet", action="store_true", help="embed the WordNet nouns (plus --vocab's terms)")
    vocab.add_argument("--templates", default="tac7", help="prompt template set: tac7 (paper), tac3, photo1")
    ray = embed.add_argument_group("Ray cluster (optional; needs requirements-ray.txt)")
    ray.add_argument("--ray", metavar="ADDRESS",
                     help="'local' (Ray on this machine), 'auto' (the cluster this machine joined) or HOST:PORT")
    ray.add_argument("--workers", type=int, help="encoder workers (default: one per GPU of the cluster, else one)")
    ray.add_argument("--gpus-per-worker", type=float, default=1.0, help="GPU share of a worker (default 1)")
    ray.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs a worker reserves (default 1)")
    embed.add_argument("--out", type=Path, required=True, help="output folder")
    embed.set_defaults(default_cache=default_cache)


def run(args: argparse.Namespace, progress: ProgressFn) -> str:
    """Everything ``embed`` does; returns the line the CLI prints at the end."""
    from ..embedding.ray_cluster import RayOptions, encoder_pool, import_ray, ray_options, ray_session
    from ..embedding.embed import embed_images, embed_vocabulary, model_cache_dir
    from ..embedding.models import ModelSpec, locate_weights

    started = time.perf_counter()
    _check_form(args)
    spec = ModelSpec(args.model, args.pretrained, None if args.checkpoint is None else str(args.checkpoint))
    locate_weights(spec)  # a missing checkpoint is reported before minutes of scanning
    ray = None if args.ray is None else RayOptions(args.ray, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                                                   gpus_per_worker=args.gpus_per_worker)
    vocabulary = _vocabulary(args)
    seconds: dict[str, float] = {}
    source = _Source(args, progress, seconds)
    if args.ray is None:
        ray = ray_options(source.ray_setting)  # a workspace's own setting, when it has one
    workers: dict = {"ray": None}  # embedded in this process
    with ray_session(ray, lazy=True):  # Ray starts only if something is missing from the cache
        start = time.perf_counter()
        result = embed_images(spec, source.paths, source.keys, source.cache, device=args.device,
                              batch_size=args.batch_size, thumbnails_dir=source.thumbnails, progress=progress,
                              precision=args.precision, ray=ray)
        seconds["embed_images"] = time.perf_counter() - start
        vectors = None
        if vocabulary is not None:
            start = time.perf_counter()
            vectors = embed_vocabulary(spec, vocabulary.names, args.templates, source.cache, device=args.device,
                                       progress=progress, ray=ray)
            seconds["embed_vocabulary"] = time.perf_counter() - start
        if ray is not None:
            workers = {"ray": ray.address, "connected": import_ray().is_initialized()}  # not when all was cached
            if workers["connected"]:
                workers.update(encoder_pool(ray, args.device).describe())

    ok = result.ok
    paths = [path for path, keep in zip(source.paths, ok) if keep]
    skipped = source.skipped + [(source.paths[i], reason) for i, reason in result.failed.items()]
    _write(args.out, result.embeddings[ok], paths, skipped, vocabulary, vectors)
    atomic.write_json(args.out / "run.json", {
        "model": {"name": spec.name, "pretrained": spec.pretrained, "checkpoint": spec.checkpoint,
                  "identity": spec.identity()},
        "precision": result.precision, "device": args.device, "source": source.label,
        "cache": str(model_cache_dir(spec, source.cache)),
        "counts": {"images": len(paths), "encoded": result.encoded, "from_cache": max(0, len(paths) - result.encoded),
                   "skipped": len(skipped), "vocabulary": 0 if vocabulary is None else len(vocabulary)},
        "seconds": {stage: round(value, 3) for stage, value in seconds.items()}
        | {"total": round(time.perf_counter() - started, 3)},
        "workers": workers,
    })
    return (f"wrote {args.out} ({len(paths)} images, {result.encoded} encoded, {len(skipped)} skipped"
            f"{'' if vocabulary is None else f', {len(vocabulary)} terms'}) in {time.perf_counter() - started:.1f} s")


class _Source:
    """The images to embed, the cache they go to, and the files already skipped (by the scan or at ingest)."""

    def __init__(self, args: argparse.Namespace, progress: ProgressFn, seconds: dict[str, float]) -> None:
        from ..inputs.imageset import scan_files, scan_folder

        self.thumbnails, self.ray_setting = None, None
        start = time.perf_counter()
        if args.workspace is not None:
            from ..workspace.workspace import open_workspace

            with open_workspace(args.workspace) as workspace:
                images = workspace.images("ok")
                self.paths, self.keys = images["path"].tolist(), images["sha256"].tolist()
                self.skipped = [(r.path, r.reason) for r in workspace.skipped_images().itertuples()]
                self.cache, self.thumbnails = workspace.cache_dir, workspace.thumbs_dir
                self.ray_setting, self.label = workspace.setting("ray_address"), f"workspace {workspace.path}"
        else:
            if args.images is not None:
                image_set = scan_folder(args.images, progress=progress)
            else:
                image_set = scan_files(_listed_files(args.files), progress=progress)
            seconds["scan_images"] = time.perf_counter() - start
            self.paths, self.keys = image_set.paths, image_set.keys
            self.skipped = [(r.path, r.reason) for r in image_set.records if r.status != "ok"]
            self.cache, self.label = args.cache or args.default_cache, str(args.images or args.files)
        kept = [index for index, path in enumerate(self.paths) if "\n" not in path and "\r" not in path]
        if len(kept) < len(self.paths):
            self.skipped += [(path, REASON_LINE_BREAK) for path in self.paths if "\n" in path or "\r" in path]
            self.paths, self.keys = [self.paths[i] for i in kept], [self.keys[i] for i in kept]
        if not self.paths:
            raise InvalidInputError(f"no usable images in {self.label} ({len(self.skipped)} skipped); nothing to embed")


def _check_form(args: argparse.Namespace) -> None:
    given = [flag for flag, value in (("--images", args.images), ("--files", args.files),
                                      ("--workspace", args.workspace)) if value is not None]
    if len(given) != 1:
        raise InvalidInputError("give exactly one of --images DIR, --files LIST or --workspace PATH"
                                + (f" (got {' and '.join(given)})" if given else ""))
    if args.workspace is not None and args.cache is not None:
        raise InvalidInputError("--cache does not apply with --workspace: a workspace keeps its own cache")
    if args.batch_size < 1:
        raise InvalidInputError(f"--batch-size must be at least 1; got {args.batch_size}")
    if args.ray is None and (args.workers is not None or args.gpus_per_worker != 1 or args.cpus_per_worker != 1):
        raise InvalidInputError("--workers, --gpus-per-worker and --cpus-per-worker need --ray")


def _listed_files(path: Path) -> list[str]:
    """The files named in ``path``, one per line (blank lines ignored), relative ones taken from its folder."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"file list {path} could not be read as UTF-8 text ({exc})") from exc
    files = [str(path.parent / line.strip()) for line in lines if line.strip()]
    if not files:
        raise InvalidInputError(f"file list {path} names no files; give one image path per line")
    return files


def _vocabulary(args: argparse.Namespace):
    if args.vocab is None and not args.wordnet:
        return None
    from .pipeline import build_vocabulary

    return build_vocabulary(None, args.vocab) if args.wordnet else build_vocabulary(args.vocab)


def _write(out: Path, embeddings: np.ndarray, paths: list[str], skipped: list[tuple[str, str]], vocabulary,
           vectors: Optional[np.ndarray]) -> None:
    from ..inputs.imageset import storable_text
    from .results import csv_text

    atomic.write_npy(out / "embeddings.npy", embeddings.astype(np.float32))
    atomic.write_text(out / "paths.txt", "".join(f"{storable_text(path)}\n" for path in paths))
    atomic.write_text(out / "skipped.csv", csv_text(["path", "reason"],
                                                    ((storable_text(p), reason) for p, reason in skipped)))
    if vocabulary is not None:
        atomic.write_npy(out / "vocab_embeddings.npy", vectors.astype(np.float32))
        atomic.write_text(out / "vocab.txt", "".join(f"{name}\n" for name in vocabulary.names))
