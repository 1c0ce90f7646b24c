"""Clustering quality: k-means on image embeddings vs TAC free vs TAC trained, each with the paper's
equal-size assumption (``balance="uniform"``, before) and with sizes estimated from the data
(``"estimated"``, after; see tac_core/cluster/balance.py), mean ± std over seeds.

    python -m bench.quality                      # synthetic CLIP-like beds (no weights needed): balanced
                                                 # and dominant (one class 50 %, three under 3 %)
        [--profiles balanced,dominant,long_tail] [--seeds 5] [--n-samples 3000] [--k-suggestion]
    python -m bench.quality --images DIR         # a folder with one sub-folder per class, real CLIP weights
        [--model ViT-B-32 --pretrained openai | --checkpoint FILE] [--device auto] [--seeds 3]

Columns: ACC, NMI, ARI and macro recall (per-class recall under the ACC map, averaged over classes: a rare
class counts as much as the dominant one), in percent. "k-means on images, estimated" is image k-means
followed by the same merge–split swaps TAC free uses. ``--k-suggestion`` adds what ``suggest_k`` proposes
on each bed with either balance, and whether TAC free at that K keeps the largest class in one cluster.

With CIFAR-10 as PNG folders and ViT-B-32/openai this reproduces the first row of the paper's table
(k-means ≈ 74 ACC, TAC no-train 90.5, TAC 91.9: the published figures in TAC_METHOD.md).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from tac_core.errors import TacError
from tac_core.cluster.balance import merge_split_repair
from tac_core.cluster.kmeans import spherical_kmeans
from tac_core.cluster.metrics import evaluate, macro_recall
from tac_core.cluster.suggest_k import suggest_k
from tac_core.cluster.synthetic import SIZE_PROFILES, class_proportions, make_clip_like_bed
from tac_core.cluster import MODES
from tac_core.cluster.tac import TAC
from tac_core.devices import DEVICES
from tac_core.embedding.cache import default_cache_root
from tac_core.run.params import RunParams

METHODS = ("k-means on images", "TAC free", "TAC trained")
ORDER = ("uniform", "estimated")  # before, after
METRICS = ("ACC", "NMI", "ARI", "recall")


def _scores(truth: np.ndarray, labels: np.ndarray, seconds: float) -> dict[str, float]:
    return dict(evaluate(truth, labels), recall=100.0 * macro_recall(truth, labels), s=seconds)


def score_methods(x: np.ndarray, v: np.ndarray, truth: np.ndarray, k: int, seed: int, device: str,
                  domain_mask=None) -> dict[tuple[str, str], dict[str, float]]:
    """Every method under both balances on one bed: {(method, balance): ACC, NMI, ARI, recall, seconds}."""
    scores = {}
    start = time.perf_counter()
    kmeans = spherical_kmeans(x, k, random_state=seed, device=device).labels
    scores[METHODS[0], "uniform"] = _scores(truth, kmeans, time.perf_counter() - start)
    repaired, _ = merge_split_repair(x, kmeans, k, random_state=seed, device=device)
    scores[METHODS[0], "estimated"] = _scores(truth, repaired, time.perf_counter() - start)
    for method, mode in zip(METHODS[1:], MODES):
        for balance in ORDER:
            start = time.perf_counter()
            labels = TAC(k, mode=mode, balance=balance, random_state=seed, device=device).fit(x, v, domain_mask).labels_
            scores[method, balance] = _scores(truth, labels, time.perf_counter() - start)
    return scores


def print_table(title: str, per_seed: list[dict[tuple[str, str], dict[str, float]]]) -> None:
    print(f"\n{title}  ({len(per_seed)} seeds; mean ± std, %)")
    cells = " | ".join(f"{m:>13}" for m in ("ACC", "NMI", "ARI", "macro recall"))
    print(f"| {'method':<18} | {'balance':<9} | {cells} | seconds | ACC vs k-means |")
    print(f"|{'-' * 20}|{'-' * 11}|" + f"{'-' * 15}|" * 4 + f"{'-' * 9}|{'-' * 16}|")
    base = np.mean([s[METHODS[0], "uniform"]["ACC"] for s in per_seed])
    for method in METHODS:
        for balance in ORDER:
            row = []
            for metric in METRICS:
                values = [s[method, balance][metric] for s in per_seed]
                row.append(f"{np.mean(values):6.1f} ± {np.std(values):4.1f}")
            acc = np.mean([s[method, balance]["ACC"] for s in per_seed])
            seconds = np.mean([s[method, balance]["s"] for s in per_seed])
            print(f"| {method:<18} | {balance:<9} | {' | '.join(f'{c:>13}' for c in row)} | {seconds:7.1f} | "
                  f"{acc / base:13.2f}x |")


def synthetic(args) -> None:
    for profile in args.profiles:
        per_seed, beds = [], []
        for seed in range(args.seeds):
            bed = make_clip_like_bed(n_samples=args.n_samples, n_classes=args.classes, size_profile=profile,
                                     random_state=100 + seed)
            beds.append(bed)
            per_seed.append(score_methods(bed.image_embeddings, bed.vocab_embeddings, bed.labels, bed.n_classes,
                                          seed, "cpu"))
        shares = " / ".join(f"{100 * p:.1f}" for p in class_proportions(profile, args.classes))
        print_table(f"Synthetic CLIP-like bed, {profile} ({shares} %): {args.n_samples} images, {args.classes} "
                    f"classes, style nuisance, {len(bed.vocab_names)} nouns; bed {{100 + s}} clustered with seed s",
                    per_seed)
        print_seed_stability(beds, args.seeds)
        if args.k_suggestion:
            print_k_suggestion(beds)


def print_seed_stability(beds: list, n_seeds: int) -> None:
    """TAC free's ACC (default balance) on each bed under ``n_seeds`` random seeds: the spread due to the seed
    alone (the table above also mixes in how hard each bed is)."""
    print(f"\nSeed-to-seed stability of TAC free: each bed clustered with seeds 0-{n_seeds - 1} (ACC, %)")
    print("| bed | ACC per seed | mean ± std |")
    print("|---|---|---|")
    stds = []
    for index, bed in enumerate(beds):
        accs = [evaluate(bed.labels, RunParams(bed.n_classes, seed=seed, device="cpu").estimator().fit(
                    bed.image_embeddings, bed.vocab_embeddings).labels_)["ACC"] for seed in range(n_seeds)]
        stds.append(np.std(accs))
        print(f"| {100 + index} | {' '.join(f'{a:.1f}' for a in accs)} | {np.mean(accs):.1f} ± {np.std(accs):.2f} |")
    print(f"std over seeds: mean {np.mean(stds):.2f}, largest {np.max(stds):.2f} points")


def print_k_suggestion(beds: list) -> None:
    """The K that suggest_k proposes under each balance (true K = the classes), and how TAC free with that
    balance at that K treats the largest class: the share of it in its biggest and in its second-biggest
    cluster (a split class has a large second share; a few stray members a small one)."""
    print("\nK suggestion (K 2-15): suggested K; largest class's share in its biggest / second-biggest cluster")
    print("| bed | " + " | ".join(f"{balance}: K | shares" for balance in ORDER) + " |")
    print("|---|" + "---|---|" * len(ORDER))
    for index, bed in enumerate(beds):
        cells = []
        largest = bed.labels == np.bincount(bed.labels).argmax()
        for balance in ORDER:
            k = suggest_k(bed.image_embeddings, bed.vocab_embeddings, k_max=15, balance=balance,
                          random_state=index).best_k
            labels = TAC(k, balance=balance, random_state=index).fit(bed.image_embeddings, bed.vocab_embeddings).labels_
            shares = np.sort(np.bincount(labels[largest], minlength=2))[::-1][:2] / largest.sum()
            cells.append(f"{k} | {shares[0]:.2f} / {shares[1]:.2f}")
        print(f"| {100 + index} | " + " | ".join(cells) + " |")


def labelled_folder(args) -> None:
    from tac_core.embedding.embed import embed_images, embed_vocabulary
    from tac_core.embedding.models import ModelSpec
    from tac_core.inputs.imageset import scan_folder
    from tac_core.inputs.vocabulary import Vocabulary

    image_set = scan_folder(args.images).require_images()
    classes = [Path(r.rel_path).parts[0] for r in image_set.ok]
    if len(set(classes)) < 2 or any(len(Path(r.rel_path).parts) < 2 for r in image_set.ok):
        raise TacError(f"{args.images} must hold one sub-folder of images per class (at least two)")
    names, truth = np.unique(classes, return_inverse=True)
    params = RunParams(len(names), ModelSpec(args.model, args.pretrained, args.checkpoint and str(args.checkpoint)),
                       device=args.device)
    spec = params.model
    embedded = embed_images(spec, image_set.paths, image_set.keys, args.cache, device=args.device,
                            batch_size=params.batch_size)
    vocab = Vocabulary.wordnet()
    v = embed_vocabulary(spec, vocab.names, params.templates, args.cache, device=args.device)
    x, truth = embedded.embeddings[embedded.ok], truth[embedded.ok]
    per_seed = [score_methods(x, v, truth, len(names), seed, args.device) for seed in range(args.seeds)]
    print_table(f"{args.images}: {len(x)} images, {len(names)} classes, {spec}", per_seed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, help="labelled folder (one sub-folder per class)")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="openai")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--cache", type=Path, default=default_cache_root(),
                        help="embedding cache (default: $TAC_STUDIO_CACHE, else ~/.cache/tac-studio)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-samples", type=int, default=3000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--profiles", type=lambda text: text.split(","), default=["balanced", "dominant"],
                        help=f"comma-separated size profiles of the synthetic beds, from {SIZE_PROFILES}")
    parser.add_argument("--k-suggestion", action="store_true", help="also measure suggest_k on each bed")
    args = parser.parse_args(argv)
    unknown = set(args.profiles) - set(SIZE_PROFILES)
    if unknown:
        parser.error(f"unknown size profile(s) {sorted(unknown)}; choose from {SIZE_PROFILES}")
    try:
        labelled_folder(args) if args.images else synthetic(args)
    except TacError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
