"""A finished clustering and the files the CLI writes for it.

``ClusterRun`` is the hand-over point of the chain (:func:`tac_core.run.pipeline.compute_run` → the CLI's files or
a workspace run): labels, confidence and anchors as plain values, the arrays a workspace keeps, and the facts
both record beside the parameters. Files are written only after all computing is done, each one atomically, so a
failure never leaves a half-written output.
"""
from __future__ import annotations

import csv
import io
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np

from .. import __version__
from .. import atomic
from ..inputs.imageset import storable_text
from ..workspace.run_layout import TEXT_SPACE_ARRAY
from .params import RunParams

if TYPE_CHECKING:  # torch: loaded once a run is there (the CLI checks its flags first)
    from ..cluster.prototypes import ClusterPrototypes


CLASSIFIER_FILE = "classifier.npz"


@dataclass
class ClusterRun:
    labels: np.ndarray  # (N,) cluster of each clustered image
    confidence: np.ndarray  # (N,)
    anchors: list[list[tuple[str, float]]]  # per cluster: (term, score), best first
    selected_terms: list[str]  # TAC's filtered nouns
    counterparts: np.ndarray  # (N, d)
    image_embeddings: np.ndarray  # (N, d)
    params: RunParams
    timings: dict[str, float]
    n_clusters: int
    model: Any  # the fitted TAC estimator (heads, centres, probabilities; later steps such as the audit)
    text_space: np.ndarray  # the vocabulary rows counterparts are mixed from
    text_terms: list[str]  # the names of those rows (selected nouns and domain terms)
    kept: np.ndarray  # one boolean per input image: embedded and clustered (row order of labels)
    failed: dict[int, str] = field(default_factory=dict)  # input image index -> why it could not be embedded
    projection: Any = None  # the fitted 2-D map (tac_core.cluster.projection.Projection), when asked for
    facts: dict[str, Any] = field(default_factory=dict)  # what the CLI's run.json and a run's summary.json record
    paths: Optional[list[str]] = None  # where images came from files: those clustered
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unusable files

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays a workspace keeps for the run (named as :mod:`tac_core.run.jobs` lists them)."""
        model = self.model
        arrays = {"image_embeddings": self.image_embeddings.astype(np.float32),
                  "counterparts": self.counterparts.astype(np.float32),
                  "cluster_centers": model.cluster_centers_.astype(np.float32),
                  "confidence": self.confidence.astype(np.float32),
                  TEXT_SPACE_ARRAY: self.text_space.astype(np.float32)}
        if self.projection is not None:
            arrays["projection"] = np.asarray(self.projection.coordinates, np.float32)
        if self.params.mode == "free":
            arrays["margin"] = model.margin_.astype(np.float32)
        else:
            arrays["probabilities"] = model.probabilities_.astype(np.float32)
            arrays["text_probabilities"] = model.text_probabilities_.astype(np.float32)
            for which, state in model.heads_.items():
                for name, tensor in state.items():
                    arrays[f"heads.{which}.{name}"] = tensor.detach().cpu().numpy()
        return arrays

    def prototypes(self) -> ClusterPrototypes:
        """The clustering as a classifier of new images (``classifier.npz``; ``python -m tac_core classify``)."""
        from ..cluster.prototypes import fit_prototypes
        return fit_prototypes(self.image_embeddings, self.counterparts, self.labels, self.text_space,
                              float(self.facts.get("tau", self.model.tau)))

    def seconds(self) -> dict[str, float]:
        """Seconds per stage, to the millisecond."""
        return {stage: round(seconds, 3) for stage, seconds in self.timings.items()}


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


def write_cluster_outputs(run: ClusterRun, out_dir: str | Path,
                          extra_files: Optional[Mapping[str, str]] = None) -> None:
    """assignments.csv, anchors.csv, selected_vocab.txt, counterparts.npy, classifier.npz (:meth:`ClusterRun.prototypes`:
    what ``classify`` sorts new images by), skipped.csv, ``extra_files`` (name → text, computed already, e.g.
    audit.csv) and run.json (the parameters as :meth:`RunParams.to_dict`, then the run's facts: source,
    versions, seconds, ...)."""
    out = Path(out_dir)
    started = time.perf_counter()
    classifier = run.prototypes().to_bytes()
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
    atomic.write_bytes(out / CLASSIFIER_FILE, classifier)
    if run.paths is not None:
        atomic.write_text(out / "skipped.csv", csv_text(["path", "reason"],
                                                          ((storable_text(p), reason) for p, reason in run.skipped)))
    for name, text in (extra_files or {}).items():
        atomic.write_text(out / name, text)
    seconds = dict(run.seconds(), write_outputs=round(time.perf_counter() - started, 3))
    atomic.write_json(out / "run.json", {
        "params": run.params.to_dict(),
        **run.facts,
        "n_images": int(len(run.labels)),
        "n_clusters": run.n_clusters,
        "cluster_sizes": np.bincount(run.labels, minlength=run.n_clusters).tolist(),
        "n_selected_terms": len(run.selected_terms),
        "n_skipped": len(run.skipped),
        "seconds": seconds,
    })
