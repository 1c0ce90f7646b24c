"""A finished clustering and the files the CLI writes for it.

``ClusterRun`` is the hand-over point of the chain (TAC → clustering): labels, confidence and anchors as
plain values, so the CLI, the app and the benchmarks read one shape. Files are written only after all
computing is done, each one atomically, so a failure never leaves a half-written output.
"""
from __future__ import annotations

import csv
import io
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import __version__
from .. import atomic
from ..inputs.imageset import storable_text


@dataclass
class ClusterRun:
    labels: np.ndarray  # (N,) cluster of each image
    confidence: np.ndarray  # (N,)
    anchors: list[list[tuple[str, float]]]  # per cluster: (term, score), best first
    selected_terms: list[str]  # TAC's filtered nouns
    counterparts: np.ndarray  # (N, d)
    image_embeddings: np.ndarray  # (N, d)
    params: dict[str, Any]
    timings: dict[str, float]
    n_clusters: int
    paths: Optional[list[str]] = None  # where images came from files
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unusable files
    model: Any = None  # the fitted TAC estimator, for later steps (audit)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "tac_core": __version__}
    for package in ("torch", "open_clip_torch", "numpy", "scikit-learn", "faiss-cpu"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def csv_text(header: list[str], rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_cluster_outputs(run: ClusterRun, out_dir: str | Path) -> None:
    """assignments.csv, anchors.csv, selected_vocab.txt, counterparts.npy, skipped.csv and run.json."""
    out = Path(out_dir)
    started = time.perf_counter()
    index = np.arange(len(run.labels))
    if run.paths is not None:
        rows = zip(index, map(storable_text, run.paths), run.labels, (f"{c:.6f}" for c in run.confidence))
        assignments = csv_text(["index", "path", "cluster", "confidence"], rows)
    else:
        rows = zip(index, run.labels, (f"{c:.6f}" for c in run.confidence))
        assignments = csv_text(["index", "cluster", "confidence"], rows)
    from ..workspace.export import neutralise  # a term like "=HYPERLINK(…)" stays text in a spreadsheet; paths are absolute

    anchor_rows = ((cluster, rank, neutralise(term), f"{score:.6f}") for cluster, anchors in enumerate(run.anchors)
                   for rank, (term, score) in enumerate(anchors, start=1))
    atomic.write_text(out / "assignments.csv", assignments)
    atomic.write_text(out / "anchors.csv", csv_text(["cluster", "rank", "term", "score"], anchor_rows))
    atomic.write_text(out / "selected_vocab.txt", "".join(f"{term}\n" for term in run.selected_terms))
    atomic.write_npy(out / "counterparts.npy", run.counterparts.astype(np.float32))
    if run.paths is not None:
        atomic.write_text(out / "skipped.csv", csv_text(["path", "reason"],
                                                          ((storable_text(p), reason) for p, reason in run.skipped)))
    timings = dict(run.timings, write_outputs=time.perf_counter() - started)
    atomic.write_json(out / "run.json", {
        "params": run.params,
        "n_images": int(len(run.labels)),
        "n_clusters": run.n_clusters,
        "cluster_sizes": np.bincount(run.labels, minlength=run.n_clusters).tolist(),
        "n_selected_terms": len(run.selected_terms),
        "n_skipped": len(run.skipped),
        "seconds": {stage: round(seconds, 4) for stage, seconds in timings.items()},
        "versions": package_versions(),
    })
