"""One computation of a run, for the app's job and the CLI alike.

:func:`compute_run` takes :class:`RunParams`, images (files embedded through the cache, or embeddings the user
already has) and a vocabulary (terms embedded through the cache, or rows already embedded); it runs TAC, then
the 2-D map and the K suggestion where the parameters ask for them, and returns a :class:`ClusterRun` with
the timings and the facts both front ends record. The job stores that in the workspace
(:mod:`tac_core.run.job`); the CLI writes it to files (:func:`~tac_core.run.results.write_cluster_outputs`).
Neither computes anything else, so the same images, parameters and seed give the same labels from both.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..devices import describe_devices, resolve_device
from ..embedding.cache import default_cache_root
from ..embedding.ray_cluster import RayOptions
from ..errors import EmptyInputError, InvalidInputError
from ..inputs.imageset import scan_folder
from ..inputs.vocabulary import Vocabulary
from ..progress import CancelToken, ProgressFn, check_cancel, report
from .params import RunParams
from .results import ClusterRun, package_versions

MIN_IMAGES_TO_SUGGEST_K = 6


@dataclass(frozen=True)
class ImageFiles:
    """Images to embed: their files, and their content sha256 (the cache keys; None computes them)."""

    paths: Sequence[str]
    keys: Optional[Sequence[str]] = None


@dataclass(frozen=True)
class TextEmbeddings:
    """A vocabulary already embedded: row i of ``vectors`` is the term ``names[i]``; ``domain_mask`` marks the
    user's domain terms (None: none)."""

    names: Sequence[str]
    vectors: np.ndarray
    domain_mask: Optional[np.ndarray] = None


def compute_run(params: RunParams, images: ImageFiles | np.ndarray, vocabulary: Vocabulary | TextEmbeddings, *,
                cache_root: Optional[str | Path] = None, thumbnails_dir: Optional[str | Path] = None,
                progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None,
                timings: Optional[dict[str, float]] = None, ray: Optional[RayOptions] = None) -> ClusterRun:
    """Embed what is not embedded yet, run TAC, then the map and the K suggestion where ``params`` ask.

    ``ray``: embed on that Ray cluster (:mod:`tac_core.embedding.distributed`) instead of in this process; each
    worker then resolves ``params.device`` on its own machine.

    ``cache_root`` defaults to :func:`~tac_core.embedding.cache.default_cache_root`; ``timings`` (seconds per
    stage) may already hold earlier stages (the CLI's scan). Images that fail to embed are left out and listed
    in ``failed`` (by input index); K is checked against the number of images before anything is embedded.
    """
    timings = {} if timings is None else timings
    cache_root = default_cache_root() if cache_root is None else Path(cache_root)
    device = str(resolve_device(params.device))
    facts = {"device": device, "devices_detected": describe_devices(), "model_identity": None,
             "image_precision": None, "ray_address": ray.address if ray else None}
    embedding = {"device": params.device if ray else device, "ray": ray}
    if isinstance(images, ImageFiles):
        x, kept, failed = _embed_images(params, images, cache_root, embedding, thumbnails_dir, progress, cancel,
                                        timings, facts)
    else:
        x, kept, failed = images, np.ones(len(images), dtype=bool), {}
    if isinstance(vocabulary, Vocabulary):
        names, domain_mask = vocabulary.names, vocabulary.is_domain
        v = _embed_vocabulary(params, names, cache_root, embedding, progress, cancel, timings, facts)
        facts["vocabulary_fingerprint"] = vocabulary.fingerprint()
    else:
        names, v, domain_mask = list(vocabulary.names), vocabulary.vectors, vocabulary.domain_mask
        facts["vocabulary_fingerprint"] = None
    facts.update(n_vocabulary=len(names), n_domain_terms=0 if domain_mask is None else int(np.sum(domain_mask)))

    model = params.estimator(device, progress, cancel).fit(x, v, domain_mask=domain_mask)
    timings.update({f"tac_{stage}": seconds for stage, seconds in model.timings_.items()})
    check_cancel(cancel)
    projection = _projection(params, x, model.counterparts_, progress, timings)
    facts["k_suggestion"] = _suggest_k(params, x, v, domain_mask, device, progress, cancel, timings)
    check_cancel(cancel)
    facts.update(n_text_terms=int(len(model.text_indices_)), n_semantic_centers=int(model.n_centers_),
                 tau=float(model.tau), versions=package_versions())
    anchors = [[(names[i], float(score)) for i, score in cluster] for cluster in model.anchors_]
    run = ClusterRun(labels=model.labels_, confidence=model.confidence_, anchors=anchors,
                     selected_terms=[names[i] for i in model.selected_indices_], counterparts=model.counterparts_,
                     image_embeddings=np.asarray(x), params=params, timings=timings, n_clusters=int(model.n_clusters),
                     model=model, text_space=np.asarray(v)[model.text_indices_],
                     text_terms=[names[i] for i in model.text_indices_], kept=kept, failed=failed,
                     projection=projection, facts=facts)
    if isinstance(images, ImageFiles):
        run.paths = [str(path) for path, keep in zip(images.paths, kept) if keep]
        run.skipped = [(str(images.paths[i]), reason) for i, reason in failed.items()]
    return run


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


def cluster_image_folder(folder: str | Path, vocabulary: Vocabulary, params: RunParams, *,
                   cache_root: Optional[str | Path] = None, progress: Optional[ProgressFn] = None,
                   cancel: Optional[CancelToken] = None) -> ClusterRun:
    """The CLI's images form: check the model's weights can be had, scan ``folder``, then :func:`compute_run`.

    Unusable files (the scan's) and images that fail to embed are both listed in ``skipped`` with their reason.
    """
    from ..embedding.models import locate_weights

    locate_weights(params.require_model())
    start = time.perf_counter()
    image_set = scan_folder(folder, progress=progress, cancel=cancel)
    timings = {"scan_images": time.perf_counter() - start}
    n_usable = len(image_set.require_images().ok)
    if n_usable < 2:
        raise EmptyInputError(f"clustering needs at least 2 images; {image_set.root} has 1 usable image (see the "
                              "skipped list).")
    run = compute_run(params, ImageFiles(image_set.paths, image_set.keys), vocabulary, cache_root=cache_root,
                      progress=progress, cancel=cancel, timings=timings)
    run.skipped = [(r.path, r.reason) for r in image_set.records if r.status != "ok"] + run.skipped
    run.facts["source"] = str(image_set.root)
    return run


def compute_projection(features: np.ndarray, method: str = "umap", seed: int = 0, progress=None):
    """The fitted 2-D map of the rows (a :class:`~tac_core.cluster.projection.Projection`), computed once per run.

    ``"umap"`` (the app's default) is :func:`tac_core.cluster.projection.fit_projection` (PCA to 50, then cosine
    UMAP); ``"pca"`` is its instant linear picture (:func:`~tac_core.cluster.projection.linear_projection`), for
    tests and previews. Either can place new images later (:func:`tac_core.run.run_map.place_new`).
    """
    from ..cluster.projection import fit_projection, linear_projection

    if method == "pca":
        return linear_projection(features)
    relabelled = None if progress is None else (lambda _stage, done, total: progress("projection", done, total))
    return fit_projection(features, random_state=seed, progress=relabelled)


def _embed_images(params, images, cache_root, embedding, thumbnails_dir, progress, cancel, timings, facts):
    from ..cluster.tac import check_n_clusters
    from ..embedding.embed import embed_images

    spec = params.require_model()
    check_n_clusters(params.n_clusters, len(images.paths))  # before minutes of embedding, not after
    start = time.perf_counter()
    embedded = embed_images(spec, images.paths, images.keys, cache_root, batch_size=params.batch_size,
                            thumbnails_dir=thumbnails_dir, progress=progress, cancel=cancel, **embedding)
    timings["embed_images"] = time.perf_counter() - start
    facts.update(model_identity=spec.identity(), image_precision=embedded.precision)
    kept = embedded.ok
    n_kept = int(kept.sum())
    if n_kept < 2:
        raise EmptyInputError(f"only {n_kept} of {len(kept)} images could be embedded; clustering needs at least 2. "
                              "Check that the image files still exist and open.")
    if params.n_clusters > n_kept:
        raise InvalidInputError(f"K = {params.n_clusters} is more than the {n_kept} images that could be embedded; "
                                "choose a smaller K.")
    return embedded.embeddings[kept], kept, dict(embedded.failed)


def _embed_vocabulary(params, names, cache_root, embedding, progress, cancel, timings, facts) -> np.ndarray:
    from ..embedding.embed import embed_vocabulary

    spec = params.require_model()
    start = time.perf_counter()
    v = embed_vocabulary(spec, names, params.templates, cache_root, progress=progress, cancel=cancel, **embedding)
    timings["embed_vocabulary"] = time.perf_counter() - start
    facts["model_identity"] = spec.identity()
    return v


def _projection(params, x, counterparts, progress, timings):
    if params.projection is None:
        return None
    start = time.perf_counter()
    report(progress, "projection", 0, 2)
    projection = compute_projection(np.concatenate([x, counterparts], axis=1), params.projection, params.seed,
                                    progress)
    report(progress, "projection", 2, 2)
    timings["projection"] = time.perf_counter() - start
    return projection


def _suggest_k(params, x, v, domain_mask, device, progress, cancel, timings) -> Optional[dict]:
    if not params.suggest_k or len(x) < MIN_IMAGES_TO_SUGGEST_K:
        return None
    from ..cluster.suggest_k import suggest_k

    start = time.perf_counter()
    result = suggest_k(x, v, domain_mask, balance=params.balance, random_state=params.seed, device=device,
                       progress=progress, cancel=cancel)
    timings["suggest_k"] = time.perf_counter() - start
    return {"best_k": result.best_k, "explanation": result.explanation, "rows": result.rows(),
            "stability_threshold": result.stability_threshold, "n_points_used": result.n_points_used}
