"""Image embedding on Ray vs one process, images/s side by side: ``python -m bench.distributed``.

    python -m bench.distributed                          # this CPU: one process vs Ray with 1 and 2 workers
    python -m bench.distributed --images 240 --rounds 1  # quicker
    python -m bench.distributed --device cuda            # a GPU machine (bench/gpu_check.sh, step "ray")

Every configuration embeds the same N elpv PNGs (300×300) with ViT-B-32 (random weights: the speed is the
trained model's) through the app's path, ``embed_images`` into a fresh cache, with the same precision (``auto``:
bf16 on a CPU with AMX, fp16 on CUDA). Configurations alternate over the rounds (medians), so load from other work
on the machine hits them alike. Ray runs on one local Ray started once (its start is listed apart); each Ray run
includes starting its actors and loading the model in them, as a real run does, and the single process loads its
model every round too. "steady" is the images/s between the first and the last batch a run received: the rate
once every worker is busy, without the start-up. On a CPU of C cores a Ray worker reserves (C - 1) / workers
CPUs and decoding one; on a GPU each worker gets 1 / workers of it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.columns import print_columns


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def configurations(device: str, workers: list[int], cpus: int):
    """(label, RayOptions or None) of each configuration."""
    from tac_core.embedding.ray_cluster import RayOptions

    out = [("one process", None)]
    for count in workers:
        if device == "cuda":
            out.append((f"Ray, {count} worker{'s' * (count > 1)}",
                        RayOptions("local", workers=count, gpus_per_worker=1 / count)))
        else:
            out.append((f"Ray, {count} worker{'s' * (count > 1)}",
                        RayOptions("local", workers=count, cpus_per_worker=(cpus - 1) / count)))
    return out


def measure(spec, paths, keys, device: str, ray) -> dict:
    """One run into a fresh cache: seconds, and the steady rate from the progress reports."""
    from tac_core.embedding.embed import embed_images
    from tac_core.embedding.models import clear_model_cache

    clear_model_cache()  # every configuration pays for loading its model(s)
    reports: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory(prefix="tac-bench-ray-") as folder:
        started = time.perf_counter()
        result = embed_images(spec, paths, keys, folder, device=device, ray=ray,
                              progress=lambda stage, done, total: reports.append((time.perf_counter(), done)))
        seconds = time.perf_counter() - started
    assert not result.failed and result.encoded == len(paths), (result.failed, result.encoded)
    batches = [(t, done) for t, done in reports if done > 0]
    steady = ((batches[-1][1] - batches[0][1]) / (batches[-1][0] - batches[0][0])
              if len(batches) > 1 and batches[-1][0] > batches[0][0] else float("nan"))
    return {"seconds": seconds, "steady": steady, "precision": result.precision}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=480)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workers", default="1,2", help="Ray worker counts, comma-separated (default 1,2)")
    parser.add_argument("--image-dir", help="a folder of images instead of the elpv-dataset package")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)

    import ray

    from bench.perf_cases import elpv_paths
    from tac_core.embedding.cache import sha256_file
    from tac_core.embedding.models import ModelSpec
    from tac_core.embedding.ray_cluster import RayOptions, connect

    cpus = os.cpu_count() or 1
    paths = elpv_paths(args.images, args.image_dir)
    keys = [f"{sha256_file(p)[:48]}-{i}" for i, p in enumerate(paths)]  # distinct even where paths repeat
    spec = ModelSpec("ViT-B-32", "none")
    started = time.perf_counter()
    connect(RayOptions("local", object_store_mb=512 if args.device == "cpu" else 4096))
    ray_start = time.perf_counter() - started
    resources = ray.cluster_resources()
    log(f"local Ray up in {ray_start:.1f} s: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
    configs = configurations(args.device, [int(w) for w in args.workers.split(",") if w.strip()], cpus)
    runs: dict[str, list[dict]] = {label: [] for label, _ in configs}
    for round_number in range(args.rounds):
        for label, options in configs:
            log(f"round {round_number + 1}: {label}")
            runs[label].append(measure(spec, paths, keys, args.device, options))
    ray.shutdown()

    rows = []
    base = statistics.median(run["seconds"] for run in runs["one process"])
    for label, options in configs:
        seconds = statistics.median(run["seconds"] for run in runs[label])
        steady = statistics.median(run["steady"] for run in runs[label])
        share = ("all cores" if options is None else f"{options.gpus_per_worker:g} GPU" if args.device == "cuda"
                 else f"{options.cpus_per_worker:g} CPU")
        rows.append({"configuration": label, "per_worker": share, "seconds": seconds,
                     "images_per_s": len(paths) / seconds, "steady_images_per_s": steady, "ratio": base / seconds,
                     "precision": runs[label][0]["precision"]})
    header = (f"ViT-B-32 (random weights), {len(paths)} elpv PNGs 300×300, {args.device} ({cpus} cores), "
              f"precision {rows[0]['precision']}, median of {args.rounds}; local Ray {ray.__version__} "
              f"(start {ray_start:.1f} s, not counted). ratio = one process' seconds / these seconds.")
    titles = ("configuration", "per worker", "seconds", "images/s", "steady images/s", "ratio")
    cells = [(r["configuration"], r["per_worker"], f"{r['seconds']:.1f}", f"{r['images_per_s']:.1f}",
              f"{r['steady_images_per_s']:.1f}", f"{r['ratio']:.2f}×") for r in rows]
    print_columns(header, titles, cells, rows, args.json)


if __name__ == "__main__":
    main()
