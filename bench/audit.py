"""Audit queue and re-clustering with decisions, measured on the synthetic bed with ground truth.

    python -m bench.audit                        # report seeds 0-4, 3000 samples, free and trained
    python -m bench.audit --tune                 # the tuning seeds (100-107) the weights were chosen on
    python -m bench.audit --modes free --seeds 0,1,2
    python -m bench.audit --scale 200000 --device cuda   # time and peak memory of audit + free re-cluster

(a) Precision of the top 5 % / 10 % of the queue at finding wrongly clustered samples (a sample is wrong when
    its cluster's Hungarian-matched class is not its class), against ranking by confidence alone and against
    random order.
(b) A simulated reviewer inspects images from the top of a queue until 5 % of the collection is inspected:
    a wrong one is moved to its true class's cluster and verified, a right one is verified. Then
    "re-cluster with my decisions". Accuracy before, after the edits alone, and after re-clustering, for the
    audit order and for random order; gain = images made right per inspected image.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from tac_core.cluster.audit import audit, audit_tac
from tac_core.cluster.metrics import clustering_accuracy
from tac_core.cluster.recluster import recluster, recluster_tac
from tac_core.cluster.synthetic import make_clip_like_bed
from tac_core.cluster.tac import TAC

REPORT_SEEDS = (0, 1, 2, 3, 4)
TUNING_SEEDS = (100, 101, 102, 103, 104, 105, 106, 107)


def true_clusters(truth: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For every sample, the cluster its class is matched to (Hungarian), −1 if the class has none."""
    k = int(max(labels.max(), truth.max())) + 1
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (labels, truth), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    cluster_of_class = np.full(k, -1)
    cluster_of_class[cols] = rows
    return cluster_of_class[truth]


def precision_at(order: np.ndarray, wrong: np.ndarray, fraction: float) -> float:
    return float(wrong[order[: int(round(fraction * len(order)))]].mean())


def review(order, labels, target, budget):
    """The simulated reviewer: inspect ``budget`` images in ``order``; move the wrong ones, verify all."""
    labels = labels.copy()
    verified = np.zeros(len(labels), bool)
    seen = order[:budget]
    labels[seen] = target[seen]
    verified[seen] = True
    return labels, verified


def run_seed(seed: int, mode: str, n_samples: int, budget_fraction: float) -> dict:
    bed = make_clip_like_bed(n_samples, random_state=seed)
    start = time.perf_counter()
    model = TAC(bed.n_classes, mode=mode, random_state=seed).fit(bed.image_embeddings, bed.vocab_embeddings)
    fit_s = time.perf_counter() - start
    labels, truth = model.labels_, bed.labels
    target = true_clusters(truth, labels)
    wrong = labels != target
    start = time.perf_counter()
    result = audit_tac(model, bed.image_embeddings)
    audit_s = time.perf_counter() - start
    rng = np.random.default_rng(10_000 + seed)
    orders = {"audit": result.order, "confidence": np.argsort(model.confidence_, kind="stable"),
              "random": rng.permutation(n_samples), "ceiling": np.argsort(~wrong, kind="stable")}
    out = {"error": wrong.mean(), "fit_s": fit_s, "audit_s": audit_s}
    for name, order in orders.items():
        for fraction in (0.05, 0.10):
            out[f"p{int(fraction * 100)}_{name}"] = precision_at(order, wrong, fraction)
    top = result.order[: int(0.1 * n_samples)]
    top_wrong = top[wrong[top]]
    right = result.suggested_cluster[top_wrong] == target[top_wrong]
    out["suggest"] = float(right.mean()) if len(top_wrong) else np.nan
    out["acc_before"] = clustering_accuracy(truth, labels)
    budget = int(round(budget_fraction * n_samples))
    for name in ("audit", "random"):
        edited, verified = review(orders[name], labels, target, budget)
        start = time.perf_counter()
        after = recluster_tac(model, bed.image_embeddings, edited, verified=verified, random_state=seed)
        out[f"recluster_s_{name}"] = time.perf_counter() - start
        assert (after.labels[verified] == edited[verified]).all()
        out[f"acc_edits_{name}"] = clustering_accuracy(truth, edited)
        out[f"acc_after_{name}"] = clustering_accuracy(truth, after.labels)
        out[f"gain_{name}"] = (out[f"acc_after_{name}"] - out["acc_before"]) * n_samples / budget
        out[f"fixed_{name}"] = int(wrong[orders[name][:budget]].sum())
    return out


def scale(n: int, device: str, dim: int = 512, k: int = 50) -> None:
    """Time and peak memory at ``n`` samples: Gaussian clusters with 5 % planted errors (no TAC fit)."""
    import resource

    import torch

    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(k, dim)).astype(np.float32)
    truth = rng.integers(k, size=n)
    x = dirs[truth] + 3 * rng.normal(size=(n, dim)).astype(np.float32)
    t = dirs[truth] + rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    labels = np.where(rng.random(n) < 0.05, rng.integers(k, size=n), truth)
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731  (MB on Linux)
    inputs = rss()
    start = time.perf_counter()
    result = audit(x, t, labels, device=device)
    audit_s = time.perf_counter() - start
    wrong = labels != truth
    verified = np.zeros(n, bool)
    verified[result.top(0.05)] = True
    start = time.perf_counter()
    recluster(x, t, labels, verified=verified, device=device)
    recluster_s = time.perf_counter() - start
    gpu = f", GPU peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MB" if device.startswith("cuda") else ""
    print(f"n={n:,} d={dim} K={k} on {device}: audit {audit_s:.1f} s, free re-cluster {recluster_s:.1f} s; "
          f"peak RSS {rss():.0f} MB ({inputs:.0f} MB before the audit){gpu}; precision of top 5 % "
          f"{wrong[result.top(0.05)].mean():.1%} (planted {wrong.mean():.1%})")


def fmt(values, scale=100.0, digits=1) -> str:
    values = np.asarray(values, dtype=float) * scale
    return f"{np.nanmean(values):.{digits}f} ± {np.nanstd(values):.{digits}f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default=None, help="comma-separated bed seeds (default: 0,1,2,3,4)")
    parser.add_argument("--tune", action="store_true", help="use the tuning seeds 100-107")
    parser.add_argument("--modes", default="free,trained")
    parser.add_argument("--n-samples", type=int, default=3000)
    parser.add_argument("--budget", type=float, default=0.05, help="share of images the reviewer inspects")
    parser.add_argument("--scale", type=int, default=0, help="only time audit + re-cluster on this many samples")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.scale:
        return scale(args.scale, args.device)
    seeds = TUNING_SEEDS if args.tune else tuple(int(s) for s in args.seeds.split(",")) if args.seeds else REPORT_SEEDS
    print(f"synthetic bed: {args.n_samples} samples, 10 classes, seeds {list(seeds)}; mean ± std over seeds")
    for mode in args.modes.split(","):
        runs = [run_seed(seed, mode, args.n_samples, args.budget) for seed in seeds]
        col = lambda key: [r[key] for r in runs]  # noqa: E731
        print(f"\n## TAC {mode}: misclustered {fmt(col('error'))} %; fit {np.mean(col('fit_s')):.1f} s, "
              f"audit {np.mean(col('audit_s')):.2f} s, re-cluster {np.mean(col('recluster_s_audit')):.1f} s")
        print("\n(a) precision of the queue at finding misclustered samples (%)")
        print("| queue | top 5 % | top 10 % |")
        print("|---|---|---|")
        for name, label in (("audit", "audit score (combined)"), ("confidence", "confidence alone"),
                            ("random", "random order"), ("ceiling", "ceiling (every misclustered first)")):
            print(f"| {label} | {fmt(col(f'p5_{name}'))} | {fmt(col(f'p10_{name}'))} |")
        wins = [sum(r[f"p{p}_audit"] > r[f"p{p}_confidence"] for r in runs) for p in (5, 10)]
        ties = [sum(r[f"p{p}_audit"] == r[f"p{p}_confidence"] for r in runs) for p in (5, 10)]
        print(f"combined above confidence alone on {wins[0]} of {len(runs)} seeds at 5 % ({ties[0]} tied), "
              f"{wins[1]} at 10 % ({ties[1]} tied)")
        print(f"suggested cluster is the true one for {fmt(col('suggest'))} % of the misclustered samples in the "
              "top 10 %")
        budget = int(round(args.budget * args.n_samples))
        print(f"\n(b) simulated reviewer: {budget} images inspected ({args.budget:.0%}), wrong ones moved, all "
              "verified, then re-clustered (accuracy %)")
        print("| reviewer order | wrong found | before | after edits | after re-cluster | images right per inspected |")
        print("|---|---|---|---|---|---|")
        for name in ("audit", "random"):
            print(f"| {name} | {fmt(col(f'fixed_{name}'), 1, 1)} | {fmt(col('acc_before'))} | "
                  f"{fmt(col(f'acc_edits_{name}'))} | {fmt(col(f'acc_after_{name}'))} | "
                  f"{fmt(col(f'gain_{name}'), 1, 3)} |")


if __name__ == "__main__":
    main()
