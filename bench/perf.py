"""Performance of every stage, each figure beside its baseline measured in the same run: ``python -m bench``.

    python -m bench                              # CPU (and the GPU too when torch sees one), ~20-25 min here
    python -m bench --quick                      # small sizes: a smoke run of every case (~3 min)
    python -m bench --only tac --sizes 50000     # one stage, chosen sizes
    python -m bench --device cuda --only text,images,tac --sizes 50000,200000,1000000 --trained-sizes 50000

Rows (ratio = baseline seconds / candidate seconds):

- **text**: the engine's exact length-bucketed encoding vs stock ``encode_text`` (same batches, same precision
  context), random-init ViT-B-32 and the tiny test model; and tokenising a vocabulary (names and templates
  tokenised once and joined vs the tokenizer on every prompt).
- **images**: the app's pipeline (content keys, cache shards and thumbnails written) vs the plain loop a user
  would write (PIL open, preprocess, ``encode_image`` on one image, no workers), real elpv images.
- **TAC free / trained** on the synthetic CLIP-like bed (512-d, 82,115 vocabulary rows, 10 classes): the engine
  vs the reference-style configuration of :mod:`bench.reference` (faiss-style k-means, 300 iterations × 10 and
  20 restarts on a 256-per-centroid subsample, exact neighbours), with peak memory of each (own process) and
  accuracy on the bed. A reference time marked ``est.`` is extrapolated from measured iterations (see
  :mod:`bench.reference`): it would not fit the run's time budget.
- **UMAP**: the engine's map (PCA to 50, then UMAP) vs UMAP on the raw 1024-d features; placing 1,000 new
  images on a fitted map vs fitting again.
- **review**: actions on a 50k-image run (``bench/review_actions.py``) vs re-opening the session.
- **bundle**: an export bundle of that run plus 2,500 duplicate files (labels.csv, manifest with the event log's
  hash; no folder tree) vs the plain CSV export; and with Label Studio, COCO and a zip.

Each case runs in its own process (``bench/perf_cases.py``); peak memory is that process' ``ru_maxrss`` (and
torch's peak allocation on a GPU). Progress goes to stderr, the table to stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("text", "images", "tac", "umap", "review", "bundle")
DEFAULT_SIZES = (10_000, 50_000, 200_000)
QUICK_SIZES = (2_000, 10_000)
CPU_TRAINED_MAX = 50_000
CPU_TRAINED_SKIP = ("heads: 20 epochs of 390 steps ≈ 6-8 min on 2 CPU cores, plus the reference's exact "
                    "neighbours (~20 min); run it on a GPU (bench/gpu_check.sh)")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_case(name: str, args: dict, timeout: float, threads: int | None = None) -> dict:
    """Run one case of bench.perf_cases in a fresh process; its result, or {"error": ...}."""
    with tempfile.TemporaryDirectory(prefix="tac-bench-case-") as folder:
        out = Path(folder) / "result.json"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        if threads:
            env["TAC_BENCH_THREADS"] = str(threads)
        started = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "bench.perf_cases", name, json.dumps(args), str(out)],
                                  cwd=ROOT, env=env, stdout=sys.stderr, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if proc.returncode != 0 or not out.exists():
            return {"error": f"exit status {proc.returncode}"}
        result = json.loads(out.read_text())
        result["wall_s"] = time.perf_counter() - started
        return result


# --- formatting -----------------------------------------------------------------------------------------
def _rate(count: int, seconds: float, unit: str) -> str:
    return f"{count / seconds:,.1f} {unit}/s"


def _secs(seconds: float, estimated: bool = False) -> str:
    text = f"{seconds:,.1f} s" if seconds < 600 else f"{seconds / 60:,.1f} min"
    return ("≈" + text + " est.") if estimated else text


def _mb(result: dict) -> str:
    if "error" in result or "peak_rss_mb" not in result:
        return "—"
    text = f"{result['peak_rss_mb']:,.0f}"
    if result.get("peak_gpu_mb"):
        text += f" (GPU {result['peak_gpu_mb']:,.0f})"
    return text


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []

    def add(self, case: str, device: str, candidate: str, baseline: str, ratio: str = "", memory: str = "",
            note: str = "") -> None:
        self.rows.append((case, device, candidate, baseline, ratio, memory, note))
        log(f"{case} [{device}]: {candidate} | {baseline} | {ratio} {note}")

    def error(self, case: str, device: str, result: dict) -> None:
        self.add(case, device, "failed", "", "", "", result.get("error", "?"))

    def print(self, header: list[str]) -> None:
        titles = ("case", "device", "candidate (engine)", "baseline", "ratio", "peak MB cand / base", "notes")
        widths = [max(len(titles[i]), *(len(r[i]) for r in self.rows)) for i in range(len(titles))] if self.rows \
            else [len(t) for t in titles]
        lines = ["\n".join(header), ""]
        lines.append("  ".join(t.ljust(w) for t, w in zip(titles, widths)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        for row in self.rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        print("\n".join(lines), flush=True)


def _ratio(baseline_s: float, candidate_s: float, estimated: bool = False) -> str:
    if not candidate_s or candidate_s != candidate_s:
        return ""
    return f"{'≈' if estimated else ''}{baseline_s / candidate_s:,.1f}×"


# --- stages ---------------------------------------------------------------------------------------------
def bench_text(table: Table, device: str, quick: bool, rounds: int) -> None:
    models = (("ViT-B-32", 48 if quick else (256 if device == "cpu" else 20_000)),
              ("tiny", 2_000 if quick else 20_000))
    for model, n in models if device == "cpu" else models[:1]:
        r = run_case("text", {"model": model, "n_prompts": n, "device": device, "rounds": rounds}, 3600)
        name = f"text {model}, {n // 7:,} names × 7 prompts"
        if "error" in r:
            table.error(name, device, r)
            continue
        table.add(name, device, _rate(r["n"], r["fast_s"], "texts") + " fast", _rate(r["n"], r["stock_s"], "texts")
                  + " stock tokenizer + encode_text", _ratio(r["stock_s"], r["fast_s"]), _mb(r),
                  f"tokenising included; stock encode_text alone {r['n'] / r['stock_encode_only_s']:,.1f} texts/s; "
                  f"max |Δ| per prompt {r['max_abs_difference']:.1e}")
    if device == "cpu":
        n_names = 1_000 if quick else 10_000
        r = run_case("tokens", {"n_names": n_names}, 1800)
        name = f"tokenise {n_names * 7:,} vocabulary prompts"
        if "error" in r:
            table.error(name, "cpu", r)
        else:
            table.add(name, "cpu", _rate(r["n"], r["joined_s"], "prompts") + " joined",
                      _rate(r["n"], r["whole_s"], "prompts") + " tokenizer", _ratio(r["whole_s"], r["joined_s"]),
                      _mb(r), "identical tokens" if r["equal"] else "TOKENS DIFFER")


def bench_images(table: Table, device: str, quick: bool, image_dir: str | None, n_images: int | None,
                 rounds: int) -> None:
    n = n_images or (24 if quick else (128 if device == "cpu" else 2_000))
    precisions = ["auto", "fp32"] if device == "cpu" else ["auto"]
    r = run_case("images", {"n_images": n, "device": device, "rounds": rounds, "image_dir": image_dir,
                            "precisions": precisions}, 3600)
    name = f"images ViT-B-32, {n:,} elpv"
    if "error" in r:
        table.error(name, device, r)
        return
    default = {"auto": "fp16 autocast" if device != "cpu" else "fp32"}.get(r["auto"], r["auto"])
    detail = f"pipeline writes cache + thumbnails; torch threads {r['threads']}"
    if device == "cpu":
        detail += f"; AMX {'yes' if r['amx'] else 'no'}"
    if "max_abs_difference_auto" in r and r["auto"] != "auto":
        detail += f"; max |Δ| vs fp32 {r['max_abs_difference_auto']:.1e}"
    table.add(name, device, _rate(n, r["pipeline_auto_s"], "img") + f" pipeline ({default}, the default)",
              _rate(n, r["plain_s"], "img") + " plain loop", _ratio(r["plain_s"], r["pipeline_auto_s"]), _mb(r), detail)
    if r["auto"] != "auto" and "pipeline_fp32_s" in r:
        table.add(name + ", fp32", device, _rate(n, r["pipeline_fp32_s"], "img") + " pipeline (fp32)",
                  _rate(n, r["plain_s"], "img") + " plain loop", _ratio(r["plain_s"], r["pipeline_fp32_s"]), "",
                  "precision='fp32' / TAC_STUDIO_IMAGE_PRECISION=fp32")


def bench_tac(table: Table, device: str, sizes: list[int], trained_sizes: list[int], beds: dict,
              budget_s: float, quick: bool, reference_max: int | None = None) -> None:
    for mode, mode_sizes in (("free", sizes), ("trained", trained_sizes)):
        for n in mode_sizes:
            name = f"TAC {mode} N={n:,}"
            if mode == "trained" and device == "cpu" and n > CPU_TRAINED_MAX:
                table.add(name, device, "skipped", "", "", "", CPU_TRAINED_SKIP)
                continue
            epochs = 2 if quick else 20
            engine = run_case("tac", {"folder": beds[n], "mode": mode, "impl": "engine", "device": device,
                                      "epochs": epochs}, 3600)
            if reference_max is not None and n > reference_max:
                reference = {"error": f"skipped above N={reference_max:,} (--reference-max)"}
            else:
                reference = run_case("tac", {"folder": beds[n], "mode": mode, "impl": "reference", "device": device,
                                             "budget_s": budget_s, "epochs": epochs}, 3600)
            if "error" in engine:
                table.error(name, device, engine)
                continue
            note = f"ACC {engine['ACC']:.1f}"
            if "error" not in reference and not reference["estimated"]:
                note += f" vs {reference['ACC']:.1f}"
            if "knn" in engine:
                note += f"; kNN IVF nlist {engine['knn']['nlist']} nprobe {engine['knn']['nprobe']} recall " \
                        f"{engine['knn']['recall']:.3f}"
            if quick:
                note += "; 2 epochs"
            if "error" in reference:
                error = reference["error"]
                base = error if error.startswith("skipped") else "failed: " + error
            else:
                base = _secs(reference["seconds"], reference["estimated"]) + " reference-style"
            ratio = "" if "error" in reference else _ratio(reference["seconds"], engine["seconds"],
                                                             reference["estimated"])
            memory = f"{_mb(engine)} / {_mb(reference)}"
            table.add(name, device, _secs(engine["seconds"]), base, ratio, memory, note)


def bench_umap(table: Table, sizes: list[int], beds: dict, quick: bool) -> None:
    for n in sizes:
        engine = run_case("umap", {"folder": beds[n], "variant": "engine", "n_new": min(1000, n // 10)}, 3600)
        name = f"UMAP map N={n - min(1000, n // 10):,}"
        if "error" in engine:
            table.error(name, "cpu", engine)
            continue
        baseline_note = "raw 1024-d"
        if n <= 10_000 or quick:
            raw = run_case("umap", {"folder": beds[n], "variant": "raw", "n_new": min(1000, n // 10)}, 3600)
            base = f"{_secs(raw['fit_s'])} UMAP on raw features" if "error" not in raw else "failed"
            ratio = _ratio(raw["fit_s"], engine["fit_s"]) if "error" not in raw else ""
            memory = f"{_mb(engine)} / {_mb(raw)}"
        else:
            base, ratio, memory = "skipped (budget)", "", _mb(engine)
            baseline_note = "raw-feature UMAP left out above 10k to keep the run short"
        table.add(name, "cpu", f"{_secs(engine['fit_s'])} PCA 50 + UMAP", base, ratio, memory,
                  f"{baseline_note}; the first fit in a process (numba compiling) took "
                  f"{engine['compile_s']:.0f} s, not counted")
        table.add(f"place {engine['n_new']:,} new on the N={n - engine['n_new']:,} map", "cpu",
                  _secs(engine["place_s"]) + " transform", _secs(engine["fit_s"]) + " fit again",
                  _ratio(engine["fit_s"], engine["place_s"]), "", "the map does not move")


def bench_review(table: Table, quick: bool) -> None:
    n = 5_000 if quick else 50_000
    r = run_case("review", {"n_images": n}, 1800)
    if "error" in r:
        table.error(f"review N={n:,}", "cpu", r)
        return
    replay = r["ms"]["open session (full replay)"]
    for action, ms in r["ms"].items():
        if action.startswith("open session"):
            continue
        table.add(f"review {action}, N={n:,}", "cpu", f"{ms:,.1f} ms", f"{replay:,.1f} ms re-open session",
                  _ratio(replay, ms), _mb(r) if action.startswith("rename") else "", "median of 7")


def bench_bundle(table: Table, quick: bool) -> None:
    n = 5_000 if quick else 50_000
    r = run_case("bundle", {"n_images": n}, 1800)
    name = f"export bundle N={n:,}"
    if "error" in r:
        table.error(name, "cpu", r)
        return
    table.add(f"{name} + {r['duplicates']:,} duplicates", "cpu", f"{r['bundle_s']:.2f} s labels.csv + manifest",
              f"{r['csv_s']:.2f} s plain CSV export", _ratio(r["csv_s"], r["bundle_s"]), _mb(r),
              f"{r['rows']:,} rows; median of 3")
    table.add(f"{name}, Label Studio + COCO, zip", "cpu", f"{r['bundle_all_s']:.2f} s", f"{r['csv_s']:.2f} s plain "
              "CSV export", _ratio(r["csv_s"], r["bundle_all_s"]), "", "median of 3")


# --- main -----------------------------------------------------------------------------------------------
def machine_header(devices: list[str]) -> list[str]:
    import torch

    cpu = platform.processor() or "CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [f"TAC Studio performance — {time.strftime('%Y-%m-%d %H:%M')}",
             f"CPU: {cpu}, {os.cpu_count()} cores; torch {torch.__version__} ({torch.get_num_threads()} threads); "
             f"python {platform.python_version()}"]
    if "cuda" in devices:
        props = torch.cuda.get_device_properties(0)
        lines.append(f"GPU: {torch.cuda.get_device_name(0)}, {props.total_memory / 2**30:.0f} GiB (rows marked cuda)")
    try:
        lines.append(f"load average at start: {os.getloadavg()[0]:.1f} (other work on the machine slows both columns)")
    except OSError:
        pass
    return lines


def _sizes(text: str) -> list[int]:
    """A comma list of sizes; "none" for no size."""
    return [] if text.strip().lower() == "none" else [int(s) for s in text.split(",") if s.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke run of every case")
    parser.add_argument("--device", default="auto", help="auto (CPU, plus the GPU when present), cpu, cuda, or "
                                                          "a comma list")
    parser.add_argument("--only", default=",".join(STAGES), help=f"comma list of {', '.join(STAGES)}")
    parser.add_argument("--sizes", default=None, help="TAC free sizes (default 10000,50000,200000; quick 2000,10000)")
    parser.add_argument("--trained-sizes", default=None, help="TAC trained sizes, or none (default: --sizes; on the "
                                                              f"CPU sizes above {CPU_TRAINED_MAX:,} are skipped)")
    parser.add_argument("--umap-sizes", default=None, help="UMAP sizes (default 10000,50000; quick 2000)")
    parser.add_argument("--images", type=int, default=None, help="number of images (default 128 CPU, 2000 GPU)")
    parser.add_argument("--image-dir", default=None, help="folder of images instead of elpv-dataset's")
    parser.add_argument("--budget", type=float, default=None, help="seconds a reference-style k-means may take "
                                                                   "before it is extrapolated (default 60 CPU, 120 GPU)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds of baseline and candidate for "
                                                                    "text and images (default 2; quick 1)")
    parser.add_argument("--reference-max", type=int, default=None, help="skip the reference-style TAC above this N")
    parser.add_argument("--json", default=None, help="also write every raw result to this file")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"--only: unknown stage(s) {sorted(unknown)}; choose from {', '.join(STAGES)}")
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [d.strip() for d in args.device.split(",")]
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    sizes = _sizes(args.sizes) if args.sizes else list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    trained = _sizes(args.trained_sizes) if args.trained_sizes else sizes
    umap_sizes = (_sizes(args.umap_sizes) if args.umap_sizes
                  else ([2_000] if args.quick else [10_000, 50_000]))
    table = Table()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tac-bench-beds-") as root:
        beds: dict[int, str] = {}

        def bed(n: int) -> str:
            if n not in beds:
                log(f"synthetic bed N={n:,}")
                result = run_case("bed", {"n": n, "folder": str(Path(root) / str(n))}, 1800)
                if "error" in result:
                    raise SystemExit(f"could not build the synthetic bed of {n} images: {result['error']}")
                beds[n] = str(Path(root) / str(n))
            return beds[n]

        for device in devices:
            budget = args.budget or (60.0 if device == "cpu" else 120.0)
            rounds = args.rounds or (1 if args.quick else 2)
            if "text" in stages:
                bench_text(table, device, args.quick, rounds)
            if "images" in stages:
                bench_images(table, device, args.quick, args.image_dir, args.images, rounds)
            if "tac" in stages:
                for n in sorted(set(sizes) | set(trained)):
                    if n in sizes or device != "cpu" or n <= CPU_TRAINED_MAX:
                        bed(n)
                bench_tac(table, device, sizes, trained, beds, budget, args.quick, args.reference_max)
        if "umap" in stages:
            for n in umap_sizes:
                bed(n)
            bench_umap(table, umap_sizes, beds, args.quick)
        if "review" in stages:
            bench_review(table, args.quick)
        if "bundle" in stages:
            bench_bundle(table, args.quick)
    header = machine_header(devices)
    header.append(f"total bench time {(time.perf_counter() - started) / 60:.1f} min; ratio = baseline time / "
                  "candidate time; ≈ … est. = extrapolated from measured iterations (bench/reference.py)")
    table.print(header)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": table.rows}, indent=2))


if __name__ == "__main__":
    main()
