"""JPEG decoding on the GPU vs today's pipeline, images/s side by side: ``python -m bench.gpu_decode``.

    python -m bench.gpu_decode --device cuda          # a GPU machine (bench/gpu_check.sh, step gpu-decode)
    python -m bench.gpu_decode --device cpu --images 64 --rounds 1   # a smoke run of the same code on a CPU

Two sets of real pictures: 1024×1024 JPEGs (elpv solar cells scaled up, quality 90; made once into a temporary
folder) and the small elpv PNGs (300×300). Each is embedded with ViT-B-32 (random weights) by
``encode_images``, as a run does (auto decoding workers, auto precision, no cache), in two modes: today's
pipeline (``TAC_STUDIO_GPU_DECODE=off``: PIL in the DataLoader workers) and the device decoder (``auto``: nvJPEG
and resizing on the GPU; on a CPU ``force``, which only shows the code runs: it is not faster there). Modes
alternate over the rounds (medians) after a warm-up of each. "min cosine" compares each image's two embeddings.
PNGs never take the device path: their row shows the new path costs them nothing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.columns import print_columns

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODES = ("off", "device")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_jpegs(sources: list[str], folder: Path, side: int = 1024) -> list[str]:
    from PIL import Image

    def make(index: int) -> str:
        path = folder / f"cell{index:05d}.jpg"
        Image.open(sources[index]).convert("RGB").resize((side, side), Image.BICUBIC).save(path, quality=90)
        return str(path)

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        return list(pool.map(make, range(len(sources))))


def embed(loaded, paths: list[str], mode: str, device: str):
    from tac_core.embedding import device_decode
    from tac_core.embedding.image_encoding import encode_images

    os.environ[device_decode.ENV] = "off" if mode == "off" else ("auto" if device == "cuda" else "force")
    started = time.perf_counter()
    result = encode_images(loaded, paths)
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    assert not result.failed, result.failed
    return time.perf_counter() - started, result.embeddings


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--image-dir", help="a folder of images instead of the elpv-dataset package")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)

    from bench.perf_cases import elpv_paths
    from tac_core.embedding.device_decode import nvjpeg_works
    from tac_core.embedding.models import ModelSpec, load_model

    loaded = load_model(ModelSpec("ViT-B-32", "none"), args.device)
    pngs = elpv_paths(args.images, args.image_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tac-bench-jpegs-") as folder:
        log(f"making {args.images} 1024×1024 JPEGs")
        sets = {"1024×1024 JPEG": make_jpegs(pngs, Path(folder)), "300×300 PNG": pngs}
        for name, paths in sets.items():
            times: dict[str, list[float]] = {mode: [] for mode in MODES}
            vectors = {}
            for mode in MODES:
                embed(loaded, paths[:128], mode, args.device)  # warm-up: workers, CUDA kernels, nvJPEG handles
            for round_number in range(args.rounds):
                for mode in MODES:
                    seconds, vectors[mode] = embed(loaded, paths, mode, args.device)
                    times[mode].append(seconds)
                    log(f"{name}, round {round_number + 1}, {mode}: {len(paths) / seconds:.0f} images/s")
            base, candidate = statistics.median(times["off"]), statistics.median(times["device"])
            cosine = float((vectors["off"] * vectors["device"]).sum(axis=1).min())
            rows.append({"set": name, "images": len(paths), "today_images_per_s": len(paths) / base,
                         "device_images_per_s": len(paths) / candidate, "ratio": base / candidate,
                         "min_cosine": cosine})
    header = (f"ViT-B-32 (random weights) on {args.device}, encode_images with auto workers and precision, median of "
              f"{args.rounds}; nvJPEG usable: {args.device == 'cuda' and nvjpeg_works('cuda')}. ratio = today's "
              "seconds / the device decoder's seconds.")
    titles = ("images", "n", "today (PIL) images/s", "device decode images/s", "ratio", "min cosine")
    cells = [(r["set"], str(r["images"]), f"{r['today_images_per_s']:,.0f}", f"{r['device_images_per_s']:,.0f}",
              f"{r['ratio']:.2f}×", f"{r['min_cosine']:.5f}") for r in rows]
    print_columns(header, titles, cells, rows, args.json)
    assert np.isfinite([r["ratio"] for r in rows]).all()


if __name__ == "__main__":
    main()
