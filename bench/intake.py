"""New batches: sorting new images into a finished clustering against clustering everything again, on the
synthetic bed with ground truth.

    python -m bench.intake                       # 50,000 samples, 10 classes, seed 0
    python -m bench.intake --seeds 0,1,2 --n-samples 20000
    python -m bench.intake --map                 # also time placing on the UMAP map against fitting a new one

The run clusters 80 % of the images of every class but the last (TAC free, K = 9). The batch is the other
20 % of those classes plus every image of the held-out class. Reported:

- known-class accuracy: the batch's known-class images sorted into the run's clusters (the bucket counts as
  wrong), scored by the run's clusters matched to classes on the run's images, against the full clustering
  (TAC free on every image, K = 10) scored on the same images;
- the novelty score's AUROC for telling the held-out class from the known ones, and the share of each sent to
  the unsorted bucket;
- seconds to sort 10,000 new images (prototypes from the run, counterparts, assignment, novelty) against
  clustering the run's images and those 10,000 again (TAC free, K = 10); with ``--map`` also placing them on
  the run's UMAP map against fitting a new one.

Timings share two CPU cores with whatever else runs: compare ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import roc_auc_score

from tac_core.cluster.metrics import clustering_accuracy
from tac_core.cluster.prototypes import fit_prototypes
from tac_core.cluster.synthetic import make_clip_like_bed
from tac_core.cluster.tac import TAC, text_counterparts

TIMED_BATCH = 10_000


def class_map(labels: np.ndarray, truth: np.ndarray) -> dict[int, int]:
    """The clusters of a clustering matched one to one to classes (Hungarian), cluster → class."""
    counts = np.zeros((labels.max() + 1, truth.max() + 1), np.int64)
    np.add.at(counts, (labels, truth), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return dict(zip(rows.tolist(), cols.tolist()))


def run_seed(seed: int, n_samples: int, with_map: bool) -> dict:
    bed = make_clip_like_bed(n_samples, random_state=seed)
    x, v, y = bed.image_embeddings, bed.vocab_embeddings, bed.labels
    held_out = bed.n_classes - 1
    rng = np.random.default_rng(seed)
    known = rng.permutation(np.flatnonzero(y != held_out))
    cut = int(0.8 * len(known))
    old, new = np.sort(known[:cut]), np.concatenate([np.sort(known[cut:]), np.flatnonzero(y == held_out)])
    is_novel = y[new] == held_out
    out = {}

    run = TAC(bed.n_classes - 1, random_state=seed).fit(x[old], v)
    text_space = v[run.text_indices_]
    start = time.perf_counter()
    prototypes = fit_prototypes(x[old], run.counterparts_, run.labels_, text_space, run.tau)
    assignment = prototypes.assign(x[new])
    out["intake_s_all"] = time.perf_counter() - start
    mapping = class_map(run.labels_, y[old])
    predicted = np.array([mapping.get(int(c), -1) for c in assignment.cluster])
    predicted[assignment.novel] = -1
    out["acc_intake"] = 100 * float((predicted[~is_novel] == y[new][~is_novel]).mean())
    out["acc_run"] = 100 * clustering_accuracy(y[old], run.labels_)
    out["auroc"] = float(roc_auc_score(is_novel, assignment.novelty))
    out["bucket_novel"] = 100 * float(assignment.novel[is_novel].mean())
    out["bucket_known"] = 100 * float(assignment.novel[~is_novel].mean())

    full = TAC(bed.n_classes, random_state=seed).fit(x, v)
    full_map = class_map(full.labels_, y)
    full_predicted = np.array([full_map.get(int(c), -1) for c in full.labels_[new]])
    out["acc_full"] = 100 * float((full_predicted[~is_novel] == y[new][~is_novel]).mean())
    out["acc_full_all"] = 100 * clustering_accuracy(y, full.labels_)

    batch = rng.choice(new, size=min(TIMED_BATCH, len(new)), replace=False)
    start = time.perf_counter()
    fit_prototypes(x[old], run.counterparts_, run.labels_, text_space, run.tau).assign(x[batch])
    out["intake_s"] = time.perf_counter() - start
    start = time.perf_counter()
    TAC(bed.n_classes, random_state=seed).fit(np.concatenate([x[old], x[batch]]), v)
    out["recluster_s"] = time.perf_counter() - start
    out["n_old"], out["n_batch"], out["n_new"] = len(old), len(batch), len(new)
    if with_map:
        out.update(time_map(x[old], run.counterparts_, x[batch], text_space, run.tau, seed))
    return out


def time_map(x_old, t_old, x_batch, text_space, tau, seed) -> dict:
    """Seconds to place the batch on the run's UMAP map against fitting a map of every image anew."""
    from tac_core.cluster.projection import fit_projection

    projection = fit_projection(np.concatenate([x_old, t_old], axis=1), random_state=seed)
    projection.transform(np.concatenate([x_batch[:10], text_counterparts(x_batch[:10], text_space, tau)], axis=1))
    start = time.perf_counter()  # timed after a first transform: UMAP compiles its code on first use
    projection.transform(np.concatenate([x_batch, text_counterparts(x_batch, text_space, tau)], axis=1))
    place = time.perf_counter() - start
    start = time.perf_counter()
    t_batch = text_counterparts(x_batch, text_space, tau)
    fit_projection(np.concatenate([np.concatenate([x_old, t_old], axis=1),
                                   np.concatenate([x_batch, t_batch], axis=1)]), random_state=seed)
    return {"place_s": place, "refit_map_s": time.perf_counter() - start}


def fmt(values, digits: int = 1) -> str:
    values = np.asarray(values, float)
    mean = f"{values.mean():.{digits}f}"
    return mean if len(values) == 1 else f"{mean} ± {values.std():.{digits}f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0", help="comma-separated bed seeds (default 0)")
    parser.add_argument("--n-samples", type=int, default=50_000)
    parser.add_argument("--map", action="store_true", help="also time the UMAP map (minutes on 2 cores)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [run_seed(seed, args.n_samples, args.map) for seed in seeds]
    col = lambda key: [r[key] for r in runs]  # noqa: E731
    first = runs[0]
    print(f"synthetic bed: {args.n_samples:,} samples, 10 classes (class 9 held out), seeds {seeds}; the run holds "
          f"{first['n_old']:,} images, the batch {first['n_new']:,}")
    print("\n| measure | sorting into the run | full clustering | target |")
    print("|---|---|---|---|")
    gap = np.array(col("acc_full")) - np.array(col("acc_intake"))
    print(f"| known-class accuracy on the batch (%) | {fmt(col('acc_intake'))} | {fmt(col('acc_full'))} | "
          f"within 3 points (gap {fmt(gap)}) |")
    print(f"| novelty AUROC, held-out class vs known | {fmt(col('auroc'), 3)} "
          "| — | ≥ 0.8 |")
    print(f"| held-out images sent to the bucket (%) | {fmt(col('bucket_novel'))} | — | — |")
    print(f"| known images sent to the bucket (%) | {fmt(col('bucket_known'))} | — | — |")
    ratio = np.array(col("recluster_s")) / np.array(col("intake_s"))
    print(f"| seconds for {first['n_batch']:,} new images | {fmt(col('intake_s'))} | {fmt(col('recluster_s'))} "
          f"(TAC on {first['n_old'] + first['n_batch']:,}) | several times faster: {fmt(ratio)}x |")
    if args.map:
        ratio = np.array(col("refit_map_s")) / np.array(col("place_s"))
        print(f"| seconds to map {first['n_batch']:,} new images | {fmt(col('place_s'))} (placed on the run's map) | "
              f"{fmt(col('refit_map_s'))} (a new UMAP) | {fmt(ratio)}x |")
    print(f"\nthe run's own accuracy: {fmt(col('acc_run'))} %; the full clustering on every image: "
          f"{fmt(col('acc_full_all'))} %")


if __name__ == "__main__":
    main()
