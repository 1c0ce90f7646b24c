"""Workspaces for the Review and Audit page tests and the page benchmark, built directly with the engine.

``real_workspace``: real elpv solar-cell images with real thumbnails, three planted clusters whose
embeddings are well separated except for a few planted misfits (the audit should rank them first).
``synthetic_workspace``: N fake image records (no files) for timing the pages at 50k images.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from tac_core.inputs.thumbnails import thumbnail_path
from tac_core.inputs.imageset import ImageRecord, ImageSet, scan_folder
from tac_core.run.run_sizes import run_size_check
from tac_core.workspace.workspace import Workspace, create_workspace

DIM = 16
MISLABELLED = 2  # position of the image the run put in the wrong cluster (re-clustering should fix it)
ANCHORS = [[("crack", 0.31), ("fracture", 0.28)], [("finger interruption", 0.27), ("busbar", 0.2)],
           [("dark area", 0.25), ("stain", 0.22)]]


def make_thumbnails(workspace: Workspace, image_ids) -> None:
    """64 px JPEG thumbnails of ``image_ids`` where the pages look for them (no encoder needed)."""
    frame = workspace.images("ok").set_index("id")
    for image_id in image_ids:
        with Image.open(frame.loc[image_id, "path"]) as im:
            im.convert("RGB").resize((64, 64)).save(thumbnail_path(workspace.thumbs_dir, frame.loc[image_id, "sha256"]),
                                                    "JPEG")


def planted_arrays(labels: np.ndarray, misfits: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Embeddings around one direction per cluster; a misfit's image view points to the next cluster."""
    rng = np.random.default_rng(seed)
    n, k = len(labels), int(labels.max()) + 1
    image_of = labels.copy()
    image_of[misfits] = (labels[misfits] + 1) % k
    x = np.eye(DIM)[image_of] + 0.15 * rng.standard_normal((n, DIM))
    t = np.eye(DIM)[labels + k] + 0.15 * rng.standard_normal((n, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    t = (t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32)
    features = np.concatenate([x, t], axis=1) / np.sqrt(2)
    centers = np.stack([features[labels == c].mean(axis=0) for c in range(k)])
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    angle = rng.uniform(0, 2 * np.pi, n)
    projection = np.stack([labels * 4 + np.cos(angle), labels % 2 * 3 + np.sin(angle)], axis=1).astype(np.float32)
    confidence = np.clip(0.95 - 0.5 * np.isin(np.arange(n), misfits) - 0.02 * rng.random(n), 0, 1)
    return {"image_embeddings": x, "counterparts": t, "cluster_centers": centers.astype(np.float32),
            "projection": projection, "confidence": confidence.astype(np.float32)}


def real_workspace(root: Path, images: Path, names=None, without: tuple[str, ...] = ()
                   ) -> tuple[Workspace, int, np.ndarray]:
    """A workspace in ``root`` with the elpv images, thumbnails and one done run of 3 clusters (its arrays
    but those named in ``without``)."""
    workspace = create_workspace("review test", root)
    image_set = scan_folder(images)
    added = workspace.add_image_set(image_set, "folder", str(images))
    make_thumbnails(workspace, added.image_ids)
    ids = np.array(added.image_ids, np.int64)
    truth = np.arange(len(ids)) % 3
    misfits = np.array([1, 5])  # positions whose image view belongs to another cluster
    arrays = {name: array for name, array in planted_arrays(truth, misfits).items() if name not in without}
    labels = truth.copy()
    labels[MISLABELLED] = (truth[MISLABELLED] + 1) % 3  # the run put it in the wrong cluster
    run_id = workspace.create_run({"n_clusters": 3, "mode": "free"}, ids)
    workspace.save_run_result(run_id, ids, labels, planted_arrays(truth, misfits)["confidence"], ANCHORS, arrays=arrays,
                              cluster_names=names)
    return workspace, run_id, ids


def synthetic_workspace(root: Path, n: int, k: int, dim: int = 32, seed: int = 0, thumbnails: bool = True,
                        small: int = 0) -> tuple[Workspace, int]:
    """``n`` fake records in ``k`` clusters with arrays, as a run the job makes today (balance "estimated", its
    size verdict saved). With ``thumbnails``, every image of a cluster shares one
    real thumbnail of the cluster's colour (hard links, a new file every 60,000: the file system's link limit);
    without, there are none (a million hard links cost minutes). ``small`` > 0 makes the last cluster exactly that
    many images (the browser benchmark moves it as a selection)."""
    rng = np.random.default_rng(seed)
    workspace = create_workspace("bench", root)
    records = tuple(ImageRecord(f"/plant/line/{i:06d}.png", f"line/{i:06d}.png", f"{i:064x}", 1000, 64, 64, "ok", "")
                    for i in range(n))
    ids = np.array(workspace.add_image_set(ImageSet("/plant", records), "folder", "/plant").image_ids)
    labels = rng.integers(0, k - 1 if small else k, n)
    if small:
        labels[rng.choice(n, small, replace=False)] = k - 1
    centres = rng.standard_normal((k, 2)) * 10
    x = rng.standard_normal((k, dim))[labels] + 0.5 * rng.standard_normal((n, dim))
    t = rng.standard_normal((k, dim))[labels] + 0.5 * rng.standard_normal((n, dim))
    arrays = {"image_embeddings": x.astype(np.float32), "counterparts": t.astype(np.float32),
              "projection": (centres[labels] + rng.standard_normal((n, 2))).astype(np.float32)}
    anchors = [[(f"term{c}_{r}", 0.4 - 0.01 * r) for r in range(5)] for c in range(k)]
    run_id = workspace.create_run({"n_clusters": k, "mode": "free", "balance": "estimated"}, ids)
    workspace.save_run_result(run_id, ids, labels, rng.random(n), anchors, arrays=arrays)
    run_size_check(workspace, run_id)
    if thumbnails:
        sources: dict[tuple[int, int], Path] = {}
        for index, (record, cluster) in enumerate(zip(records, labels.tolist())):
            target = thumbnail_path(workspace.thumbs_dir, record.sha256)
            source = sources.get((cluster, index // 60_000))
            if source is None:
                colour = tuple(int(v) for v in 60 + (np.random.default_rng(cluster).random(3) * 180))
                Image.new("RGB", (64, 64), colour).save(target, "JPEG")
                sources[cluster, index // 60_000] = target
            else:
                os.link(source, target)
    return workspace, run_id


SPLIT_ANCHORS = [[("crack", 0.31), ("fracture", 0.29), ("cell", 0.2)], [("crack", 0.30), ("fracture", 0.28)],
                 [("finger interruption", 0.27), ("busbar", 0.2)], [("dark area", 0.25), ("stain", 0.22)]]


def split_class_arrays(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A set shaped like a plant set: one class of 7/12 of the images, one of 1/4, two rare ones of 1/12 each.

    Returns the true classes, the labels of a run that forced equal sizes (the big class cut in two halves,
    clusters 0 and 1; the two rare classes together in cluster 3) and the run arrays.
    """
    rng = np.random.default_rng(seed)
    truth = np.repeat([0, 1, 2, 3], [7 * n // 12, n // 4, n // 12, n // 12])
    forced = np.where(truth == 0, (np.arange(n) >= 7 * n // 24).astype(np.int64), np.minimum(truth + 1, 3))
    x = np.eye(DIM)[truth] + 0.1 * rng.standard_normal((n, DIM))
    t = np.eye(DIM)[truth + 4] + 0.1 * rng.standard_normal((n, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    t = (t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, n)
    projection = np.stack([truth * 4 + np.cos(angle), np.sin(angle)], axis=1).astype(np.float32)
    return truth, forced, {"image_embeddings": x, "counterparts": t, "projection": projection}


def split_class_workspace(root: Path, images: Path, params: dict, forced: bool = True
                          ) -> tuple[Workspace, int, np.ndarray]:
    """A workspace with the 24 elpv images (thumbnails made) and one done run of :func:`split_class_arrays`:
    the forced labels when ``forced``, else the true classes. ``params`` are the run's stored parameters."""
    workspace = create_workspace("sizes test", root)
    added = workspace.add_image_set(scan_folder(images), "folder", str(images))
    make_thumbnails(workspace, added.image_ids)
    ids = np.array(added.image_ids, np.int64)
    truth, forced_labels, arrays = split_class_arrays(len(ids))
    labels = forced_labels if forced else truth
    anchors = SPLIT_ANCHORS if forced else [SPLIT_ANCHORS[0], SPLIT_ANCHORS[2], SPLIT_ANCHORS[3], [("scratch", 0.2)]]
    run_id = workspace.create_run({"n_clusters": 4, **params}, ids)
    workspace.save_run_result(run_id, ids, labels, np.full(len(ids), 0.9), anchors, arrays=arrays)
    return workspace, run_id, ids
