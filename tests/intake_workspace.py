"""A reviewed run built from the synthetic bed with the engine, and a later batch of its images, for the intake
tests: the run holds 80 % of the images of every class but the last; the batch holds the other 20 % and every
image of the held-out class. Image records are fake (no files): intake is given their embeddings."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tac_core import atomic
from tac_core.cluster.projection import linear_projection
from tac_core.cluster.synthetic import make_clip_like_bed
from tac_core.cluster.tac import TAC, text_counterparts
from tac_core.inputs.imageset import ImageRecord, ImageSet
from tac_core.workspace.run_layout import MAP_FOLDER
from tac_core.workspace.runs import SUMMARY_FILE
from tac_core.workspace.workspace import Workspace, create_workspace

TAU = 0.005


@dataclass
class Bed:
    workspace: Workspace
    run_id: int
    run_ids: np.ndarray  # image ids of the run, by position
    run_truth: np.ndarray
    batch_ids: np.ndarray  # image ids of the later batch (added to the workspace already)
    batch_x: np.ndarray
    batch_t: np.ndarray
    batch_xy: np.ndarray
    batch_truth: np.ndarray
    held_out: int
    cluster_of_class: dict[int, int]  # the run's cluster holding most of each known class


def _records(indices, offset: int) -> ImageSet:
    records = tuple(ImageRecord(f"/plant/line{i % 3}/cam{i % 2}/{i:05d}.png", f"line{i % 3}/cam{i % 2}/{i:05d}.png",
                                f"{i + offset:064x}", 1000, 32, 32, "ok", "") for i in indices)
    return ImageSet("/plant", records)


def bed_workspace(root: Path, n: int = 800, n_classes: int = 4, seed: int = 0) -> Bed:
    bed = make_clip_like_bed(n_samples=n, n_classes=n_classes, dim=64, n_distractor_nouns=200, noise=1.2,
                             random_state=seed)
    x, v, y = bed.image_embeddings, bed.vocab_embeddings, bed.labels
    held_out = n_classes - 1
    rng = np.random.default_rng(seed)
    known = rng.permutation(np.flatnonzero(y != held_out))
    cut = int(0.8 * len(known))
    run_rows, later = np.sort(known[:cut]), np.concatenate([np.sort(known[cut:]), np.flatnonzero(y == held_out)])
    model = TAC(n_classes - 1, random_state=seed).fit(x[run_rows], v)
    text_space = v[model.text_indices_]
    workspace = create_workspace("intake bed", root)
    run_ids = np.array(workspace.add_image_set(_records(run_rows, 0), "folder", "/plant").image_ids)
    features = np.concatenate([x[run_rows], model.counterparts_], axis=1)
    projection = linear_projection(features)
    run_id = workspace.create_run({"n_clusters": n_classes - 1, "mode": "free"}, run_ids)
    arrays = {"image_embeddings": x[run_rows], "counterparts": model.counterparts_, "text_space": text_space,
              "cluster_centers": model.cluster_centers_, "projection": projection.coordinates}
    projection.save(workspace.run_dir(run_id) / MAP_FOLDER)
    terms = [bed.vocab_names[i] for i in model.text_indices_]
    atomic.write_json(workspace.run_dir(run_id) / SUMMARY_FILE, {"tau": TAU, "text_space_terms": terms})
    anchors = [[(bed.vocab_names[i], s) for i, s in pairs] for pairs in model.anchors_]
    workspace.save_run_result(run_id, run_ids, model.labels_, model.confidence_, anchors, arrays=arrays)
    batch_ids = np.array(workspace.add_image_set(_records(later, 10**6), "folder", "/plant/later").image_ids)
    batch_t = text_counterparts(x[later], text_space, TAU)
    cluster_of_class = {c: int(np.bincount(model.labels_[y[run_rows] == c]).argmax()) for c in range(n_classes - 1)}
    return Bed(workspace, run_id, run_ids, y[run_rows], batch_ids, x[later], batch_t,
               projection.transform(np.concatenate([x[later], batch_t], axis=1)), y[later], held_out,
               cluster_of_class)
