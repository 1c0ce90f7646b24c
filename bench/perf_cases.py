"""The measurements of ``bench/perf.py``, each run in a fresh process so its peak memory is its own.

``python -m bench.perf_cases CASE ARGS_JSON OUT_JSON`` runs one case and writes its result (a dict) to
OUT_JSON, with the process' peak resident memory (``peak_rss_mb``, from ``getrusage``) and, on a GPU, the
peak GPU memory torch allocated (``peak_gpu_mb``). Baseline and candidate that are compared for speed run
interleaved in the same process (one after the other, several rounds, medians), so load from other work on
the machine hits both alike; TAC's two configurations run in separate processes so each has its own peak
memory.
"""
from __future__ import annotations

import importlib.resources
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
N_VOCABULARY = 82_115  # WordNet 3.0 nouns: the full vocabulary the issue sizes the engine for
TINY_CONFIG = ROOT / "tests" / "tiny_clip.json"


def log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _load(model: str, device: str):
    from tac_core.embedding.models import ModelSpec, load_model

    spec = ModelSpec(str(TINY_CONFIG), "none") if model == "tiny" else ModelSpec(model, "none")
    return load_model(spec, device)


def _names(n: int, seed: int = 0) -> list[str]:
    from tac_core.inputs.vocabulary import Vocabulary

    names = Vocabulary.wordnet().names
    picked = np.random.default_rng(seed).choice(len(names), size=n, replace=n > len(names))
    return [names[j] for j in picked]


def _interleaved(functions: dict, rounds: int, device: str) -> dict[str, list[float]]:
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


# --- cases ----------------------------------------------------------------------------------------------
def case_text(model: str, n_prompts: int, device: str, rounds: int = 2) -> dict:
    """Embedding vocabulary names as TAC does (7 prompts each, tokenising included): ``encode_vocabulary`` vs
    the stock path (the tokenizer on every prompt, ``encode_text`` in the same batches, the same precision
    context). Also times stock ``encode_text`` alone on ready tokens, and checks prompt-level exactness."""
    import torch

    from tac_core.embedding.models import inference_context
    from tac_core.inputs.prompts import TAC_TEMPLATES
    from tac_core.embedding.text_encoding import DEFAULT_BATCH_SIZE, encode_texts, encode_vocabulary

    loaded = _load(model, device)
    names = _names(max(1, n_prompts // len(TAC_TEMPLATES)))
    prompts = [template.format(name) for name in names for template in TAC_TEMPLATES]
    ready_tokens = loaded.tokenizer(prompts)

    def encode_stock(tokens, limit: int):
        with inference_context(loaded.device):
            parts = [loaded.model.encode_text(tokens[s:min(s + DEFAULT_BATCH_SIZE, limit)].to(loaded.device))
                     for s in range(0, limit, DEFAULT_BATCH_SIZE)]
            return torch.nn.functional.normalize(torch.cat(parts).float(), dim=-1).cpu().numpy()

    def stock():
        vectors = encode_stock(loaded.tokenizer(prompts), len(prompts))
        means = vectors.reshape(len(names), len(TAC_TEMPLATES), -1).mean(axis=1)
        return means / np.linalg.norm(means, axis=1, keepdims=True)

    log(f"text {model} on {device}: {len(names)} names × {len(TAC_TEMPLATES)} prompts, warm-up and exactness check")
    check = min(len(prompts), 64 if model != "tiny" and device == "cpu" else 512)
    difference = float(np.abs(encode_stock(ready_tokens, check) - encode_texts(loaded, prompts[:check])).max())
    functions = {"stock": stock, "fast": lambda: encode_vocabulary(loaded, names),
                 "stock_encode_only": lambda: encode_stock(ready_tokens, len(prompts))}
    if device != "cpu":  # a GPU plans attention once per new batch shape (cuDNN): ~2 s for the first 20k
        for function in functions.values():  # prompts of the fast path, amortised over a whole vocabulary
            function()
    times = _interleaved(functions, rounds, device)
    return {"n": len(prompts), "names": len(names), "max_abs_difference": difference, "times": times,
            **{f"{name}_s": statistics.median(values) for name, values in times.items()}}


def case_tokens(n_names: int) -> dict:
    """Tokenising a vocabulary: the tokenizer on every prompt vs names and templates tokenised once."""
    import torch

    from tac_core.inputs.prompts import TAC_TEMPLATES
    from tac_core.embedding.text_encoding import vocabulary_tokens
    from tac_core.inputs.vocabulary import Vocabulary

    tokenizer = _load("ViT-B-32", "cpu").tokenizer
    names = Vocabulary.wordnet().names[:n_names]
    prompts = [t.format(n) for n in names for t in TAC_TEMPLATES]
    results = {}
    times = _interleaved({"whole": lambda: results.__setitem__("whole", tokenizer(prompts)),
                          "joined": lambda: results.__setitem__("joined", vocabulary_tokens(tokenizer, names,
                                                                                            TAC_TEMPLATES))},
                         2, "cpu")
    return {"n": len(prompts), "whole_s": statistics.median(times["whole"]),
            "joined_s": statistics.median(times["joined"]), "equal": bool(torch.equal(results["whole"],
                                                                                      results["joined"]))}


def elpv_paths(n: int, image_dir: str | None = None) -> list[str]:
    """``n`` real elpv solar-cell PNGs (cycled when the folder holds fewer: the lent GPU box gets a subset)."""
    if image_dir:
        files = sorted(str(p) for p in Path(image_dir).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    else:
        source = importlib.resources.files("elpv_dataset") / "data" / "images"
        files = sorted(str(p) for p in source.iterdir() if str(p).endswith(".png"))
    if not files:
        raise SystemExit(f"no images found in {image_dir or 'elpv_dataset'}")
    return [files[i % len(files)] for i in range(n)]


def case_images(n_images: int, device: str, rounds: int = 2, image_dir: str | None = None,
                precisions: tuple[str, ...] = ("auto",)) -> dict:
    """The app's pipeline (content keys known, thumbnails and cache written, into a fresh folder each round)
    vs the plain loop a user would write: PIL open, the model's preprocess, ``encode_image`` on one image.
    Each of ``precisions`` is a pipeline variant (``"bf16"``: the bfloat16 image tower)."""
    import torch
    from PIL import Image

    from tac_core.embedding.cache import VectorStore, sha256_file
    from tac_core.embedding.image_encoding import cpu_has_amx, encode_images, resolve_precision

    loaded = _load("ViT-B-32", device)
    paths = elpv_paths(n_images, image_dir)
    keys = [f"{sha256_file(p)[:48]}-{i}" for i, p in enumerate(paths)]  # distinct even where paths repeat
    model, preprocess = loaded.model, loaded.preprocess
    vectors = {}

    def plain():
        out = []
        with torch.no_grad():
            for path in paths:
                image = Image.open(path).convert("RGB")
                out.append(model.encode_image(preprocess(image).unsqueeze(0).to(loaded.device)).cpu())
        return out

    def pipeline(precision):
        with tempfile.TemporaryDirectory(prefix="tac-bench-images-") as folder:
            store = VectorStore(Path(folder) / "cache", loaded.embed_dim)
            result = encode_images(loaded, paths, keys=keys, store=store, thumbnails_dir=Path(folder) / "thumbs",
                                   precision=precision)
            assert not result.failed, result.failed
            vectors[precision] = result.embeddings

    log(f"images on {device}: {n_images} images, warm-up")
    for precision in precisions:
        encode_images(loaded, paths[:8], num_workers=0, precision=precision)
    with torch.no_grad():
        model.encode_image(preprocess(Image.open(paths[0]).convert("RGB")).unsqueeze(0).to(loaded.device))
    functions = {"plain": plain, **{f"pipeline_{p}": (lambda p=p: pipeline(p)) for p in precisions}}
    times = _interleaved(functions, rounds, device)
    out = {"n": n_images, "plain_s": statistics.median(times["plain"]), "times": times,
           "threads": torch.get_num_threads(), "amx": cpu_has_amx(), "auto": resolve_precision("auto", loaded)}
    for precision in precisions:
        out[f"pipeline_{precision}_s"] = statistics.median(times[f"pipeline_{precision}"])
        if precision != "fp32" and "fp32" in vectors:
            out[f"max_abs_difference_{precision}"] = float(np.abs(vectors[precision] - vectors["fp32"]).max())
    return out


def case_bed(n: int, folder: str, seed: int = 0) -> dict:
    """Write the synthetic bed of ``n`` images and the full-size vocabulary to ``folder`` (x, v, labels .npy)."""
    from tac_core.cluster.synthetic import make_clip_like_bed

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    bed = make_clip_like_bed(n_samples=n, n_classes=10, dim=512, n_distractor_nouns=N_VOCABULARY - 53,
                             random_state=seed)
    np.save(out / "x.npy", bed.image_embeddings)
    np.save(out / "v.npy", bed.vocab_embeddings)
    np.save(out / "labels.npy", bed.labels)
    return {"n": n, "vocabulary": int(len(bed.vocab_embeddings))}


def _read_bed(folder: str):
    out = Path(folder)
    return np.load(out / "x.npy"), np.load(out / "v.npy"), np.load(out / "labels.npy")


def case_tac(folder: str, mode: str, impl: str, device: str, budget_s: float = 60.0, epochs: int = 20) -> dict:
    """One TAC fit on a saved bed: the engine (``impl="engine"``) or the reference-style configuration."""
    import tac_core.embedding.models  # noqa: F401  (imports open_clip: seconds a running app has already paid)
    from tac_core.cluster.metrics import evaluate

    x, v, truth = _read_bed(folder)
    rss_inputs = _rss_mb()
    log(f"TAC {mode} {impl} on {device}: {len(x)} images × {len(v)} terms")
    _sync(device)
    started = time.perf_counter()
    out: dict = {"n": len(x), "rss_inputs_mb": rss_inputs}
    if impl == "engine":
        from tac_core.cluster.neighbors import approximate_knn, use_approximate
        from tac_core.cluster.tac import TAC

        model = TAC(10, mode=mode, device=device, random_state=0, epochs=epochs).fit(x, v)
        _sync(device)
        out.update(seconds=time.perf_counter() - started, stages=model.timings_, estimated=False)
        labels = model.labels_
        if mode == "trained" and use_approximate(len(x), device):
            _, _, info = approximate_knn(x, 50, device=device)  # what the fit used for image neighbours
            out["knn"] = {"nlist": info.nlist, "nprobe": info.nprobe, "recall": info.recall, "sample": info.sample}
    else:
        from bench.reference import reference_tac

        result = reference_tac(x, v, 10, mode, 0, device, budget_s, epochs)
        _sync(device)
        out.update(seconds=result["seconds"], measured_seconds=time.perf_counter() - started,
                   stages=result["stages"], estimated=result["estimated"])
        labels = result["labels"]
    out["ACC"] = evaluate(truth, labels)["ACC"]
    return out


def case_umap(folder: str, variant: str, n_new: int = 1000) -> dict:
    """The map of [image, counterpart] features: PCA 50 then UMAP (the engine), or UMAP on the raw features."""
    import umap  # noqa: F401  (imported before timing: numba's import is slow)

    from tac_core.cluster.projection import fit_projection
    from tac_core.cluster.tac import TAC

    x, v, _ = _read_bed(folder)
    model = TAC(10, random_state=0).fit(x, v)
    features = np.concatenate([x, model.counterparts_], axis=1)
    new, old = features[:n_new], features[n_new:]
    pca_dims = 50 if variant == "engine" else 4096
    started = time.perf_counter()  # numba compiles UMAP's and pynndescent's code paths as a fit first takes them
    fit_projection(old, random_state=0, pca_dims=pca_dims)  # (a smaller warm-up missed some: 35 s, then 17 s)
    compile_s = time.perf_counter() - started
    log(f"UMAP {variant}: {len(old)} points")
    started = time.perf_counter()
    projection = fit_projection(old, random_state=0, pca_dims=pca_dims)
    fit_s = time.perf_counter() - started
    out = {"n": len(old), "fit_s": fit_s, "compile_s": compile_s}
    if variant == "engine":
        projection.transform(new[:50])  # the first transform compiles too
        started = time.perf_counter()
        projection.transform(new)
        out.update(place_s=time.perf_counter() - started, n_new=n_new)
    return out


def case_review(n_images: int, reps: int = 7) -> dict:
    """Review actions on a 50k-image run (bench/review_actions.py), each against re-opening the session (a
    full replay of the event log: what a page without incremental state would pay per action)."""
    from bench.review_actions import build_workspace, timed
    from tac_core.workspace.review import ReviewSession

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="tac-bench-review-") as root:
        workspace, run_id = build_workspace(root, n_images, 100, 200)
        session = ReviewSession(workspace, run_id)
        ids = session.state.image_ids
        merges = iter(range(99, 40, -1))
        rows = {
            "open session (full replay)": timed(lambda: ReviewSession(workspace, run_id), reps),
            "rename + clusters()": timed(lambda: (session.rename(2, f"name {rng.random()}"), session.clusters()),
                                         reps),
            "merge + clusters()": timed(lambda: (session.merge(next(merges), 3), session.clusters()), reps),
            "move 5k + clusters()": timed(lambda: (session.move(rng.choice(ids, 5000, replace=False), 4),
                                                   session.clusters()), reps, after=session.undo),
            "undo + clusters()": timed(lambda: (session.undo(), session.clusters()), reps,
                                       before=lambda: session.merge(next(merges), 5)),
        }
        workspace.close()
    return {"n": n_images, "ms": {name: statistics.median(values) for name, values in rows.items()}}


def case_bundle(n_images: int, reps: int = 3) -> dict:
    """An export bundle of a reviewed 50k-image run (one duplicate file per 20 images, 200 edits in its log)
    without the folder tree, against the plain CSV export of the same review, interleaved."""
    from bench.review_actions import build_workspace
    from tac_core.inputs.imageset import ImageRecord, ImageSet
    from tac_core.workspace.bundle import BundleOptions, write_bundle
    from tac_core.workspace.export import export_labels
    from tac_core.workspace.review import ReviewSession

    with tempfile.TemporaryDirectory(prefix="tac-bench-bundle-") as root:
        workspace, run_id = build_workspace(root, n_images, 100, 200)
        copies = tuple(ImageRecord(f"/plant/copies/{i:06d}.png", f"copies/{i:06d}.png", f"{i:064x}", 1000, 64, 64,
                                   "ok", "") for i in range(0, n_images, 20))
        duplicates = workspace.add_image_set(ImageSet("/plant/copies", copies), "path", "/plant/copies").duplicates
        session = ReviewSession(workspace, run_id)
        out = Path(root) / "out"
        times = _interleaved({
            "csv": lambda: export_labels(session, workspace, run_id, dest_dir=out),
            "bundle": lambda: write_bundle(session, BundleOptions(), out),
            "bundle_all": lambda: write_bundle(session, BundleOptions(label_studio=True, coco=True, as_zip=True),
                                               out),
        }, reps, "cpu")
        rows = write_bundle(session, BundleOptions(), out).n_rows
        workspace.close()
    return {"n": n_images, "duplicates": duplicates, "rows": rows,
            **{f"{name}_s": statistics.median(values) for name, values in times.items()}}


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


CASES = {"text": case_text, "tokens": case_tokens, "images": case_images, "bed": case_bed, "tac": case_tac,
         "umap": case_umap, "review": case_review, "bundle": case_bundle}


def main() -> None:
    name, args, out_path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    threads = os.environ.get("TAC_BENCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    result = CASES[name](**args)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
            result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    Path(out_path).write_text(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
