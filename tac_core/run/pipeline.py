"""The whole chain in one call: image set → embeddings → TAC → a :class:`ClusterRun`.

The CLI and the app's job runner both call these functions with a :class:`ClusterConfig`, so a run from
the command line and a run from the app are the same computation with the same recorded parameters.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..embedding.embed import embed_images, embed_vocabulary
from ..errors import EmptyInputError
from ..inputs.imageset import ImageSet, scan_folder
from ..embedding.models import ModelSpec, locate_weights
from ..progress import CancelToken, ProgressFn
from .results import ClusterRun
from ..cluster.tac import TAC, check_n_clusters
from ..inputs.vocabulary import Vocabulary


@dataclass
class ClusterConfig:
    """Every parameter of a run; ``as_dict`` is what run.json and the workspace record."""

    n_clusters: int
    mode: str = "free"
    seed: int = 0
    epochs: int = 20
    include_domain_terms: bool = True
    device: str = "auto"
    templates: str = "tac7"
    model: ModelSpec = field(default_factory=ModelSpec)
    cache_root: Optional[Path] = None

    def as_dict(self) -> dict[str, Any]:
        params = asdict(self)
        params["model"] = {"name": self.model.name, "pretrained": self.model.pretrained,
                           "checkpoint": self.model.checkpoint, "identity": self.model.identity()}
        params["cache_root"] = None if self.cache_root is None else str(self.cache_root)
        return params

    def estimator(self, progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None) -> TAC:
        return TAC(self.n_clusters, mode=self.mode, epochs=self.epochs, include_domain_terms=self.include_domain_terms,
                   device=self.device, random_state=self.seed, progress=progress, cancel=cancel)


def build_vocabulary(terms_file: Optional[Path] = None, extra_file: Optional[Path] = None,
                     categories: Optional[Sequence[str]] = None, subtrees: Optional[Sequence[str]] = None) -> Vocabulary:
    """``terms_file`` alone (its terms count as domain terms), or WordNet (filtered) plus ``extra_file``."""
    if terms_file is not None:
        return Vocabulary.load_terms_file(terms_file)
    vocab = Vocabulary.wordnet(categories=categories, subtree=subtrees)
    if extra_file is not None:
        vocab = vocab + Vocabulary.load_terms_file(extra_file)
    if len(vocab) == 0:
        raise EmptyInputError("the vocabulary is empty after filtering; widen --vocab-categories/--vocab-subtree")
    return vocab


def _fit(x: np.ndarray, v: np.ndarray, names: Sequence[str], domain_mask: Optional[np.ndarray],
         config: ClusterConfig, progress, cancel, timings: dict[str, float], params: dict, paths=None,
         skipped=()) -> ClusterRun:
    model = config.estimator(progress, cancel).fit(x, v, domain_mask=domain_mask)
    timings.update({f"tac_{stage}": seconds for stage, seconds in model.timings_.items()})
    anchors = [[(names[i], score) for i, score in cluster] for cluster in model.anchors_]
    return ClusterRun(labels=model.labels_, confidence=model.confidence_, anchors=anchors,
                      selected_terms=[names[i] for i in model.selected_indices_], counterparts=model.counterparts_,
                      image_embeddings=x, params=params, timings=timings, n_clusters=int(model.n_clusters),
                      paths=paths, skipped=list(skipped), model=model)


def cluster_embeddings(x: np.ndarray, v: np.ndarray, names: Sequence[str], config: ClusterConfig,
                       domain_mask: Optional[np.ndarray] = None, progress: Optional[ProgressFn] = None,
                       cancel: Optional[CancelToken] = None) -> ClusterRun:
    """TAC on embeddings the user already has: row i of ``v`` is the term ``names[i]``."""
    params = {key: value for key, value in asdict(config).items() if key not in ("model", "cache_root", "templates")}
    params.update(source="embeddings", n_vocabulary=len(names))
    return _fit(x, v, names, domain_mask, config, progress, cancel, {}, params)


def cluster_images(image_set: ImageSet, vocab: Vocabulary, config: ClusterConfig,
                   progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None,
                   thumbnails_dir: Optional[Path] = None, timings: Optional[dict[str, float]] = None) -> ClusterRun:
    """Embed the image set's usable images and the vocabulary (through the cache), then run TAC.

    Images that fail to decode while embedding are dropped and listed in ``skipped`` with their reason.
    """
    timings = {} if timings is None else timings
    n_usable = len(image_set.require_images().ok)
    if n_usable < 2:
        raise EmptyInputError(f"clustering needs at least 2 images; {image_set.root} has 1 usable image (see the "
                              "skipped list).")
    check_n_clusters(config.n_clusters, n_usable)  # before minutes of embedding, not after
    cache_root = config.cache_root or Path.home() / ".cache" / "tac-studio"
    start = time.perf_counter()
    embedded = embed_images(config.model, image_set.paths, image_set.keys, cache_root, device=config.device,
                            thumbnails_dir=thumbnails_dir, progress=progress, cancel=cancel)
    timings["embed_images"] = time.perf_counter() - start
    ok = embedded.ok
    paths = [p for p, keep in zip(image_set.paths, ok) if keep]
    skipped = [(r.path, r.reason) for r in image_set.records if r.status != "ok"]
    skipped += [(image_set.paths[i], reason) for i, reason in embedded.failed.items()]
    if not paths:
        raise EmptyInputError(f"none of the {len(ok)} images in {image_set.root} could be embedded; "
                              "see the skipped list")
    start = time.perf_counter()
    v = embed_vocabulary(config.model, vocab.names, config.templates, cache_root, device=config.device,
                         progress=progress, cancel=cancel)
    timings["embed_vocabulary"] = time.perf_counter() - start
    params = config.as_dict()
    params.update(source=image_set.root, n_vocabulary=len(vocab), vocabulary_fingerprint=vocab.fingerprint())
    return _fit(embedded.embeddings[ok], v, vocab.names, vocab.is_domain, config, progress, cancel, timings,
                params, paths=paths, skipped=skipped)


def cluster_image_folder(folder: Path, vocab: Vocabulary, config: ClusterConfig,
                         progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None) -> ClusterRun:
    """Check the model's weights can be had, scan ``folder``, then :func:`cluster_images`."""
    locate_weights(config.model)
    start = time.perf_counter()
    image_set = scan_folder(folder, progress=progress, cancel=cancel)
    timings = {"scan_images": time.perf_counter() - start}
    return cluster_images(image_set, vocab, config, progress, cancel, timings=timings)
