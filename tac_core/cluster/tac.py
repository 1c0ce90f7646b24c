"""TAC — Text-Aided Clustering (Li et al., ICML 2024) as a scikit-learn-style estimator on arrays.

Images alone cluster by whatever varies most (lighting, background); nouns carry the semantics people group
by. TAC (1) over-clusters the images into M semantic centres and keeps, per centre, the 5 nouns that belong
to it most confidently; (2) gives every image a text counterpart, a sharp softmax mix (τ = 0.005) of those
nouns; (3) clusters the concatenation [image, counterpart] with k-means ("free"), or trains two cluster heads
by cross-modal mutual distillation ("trained"). See docs/ARCHITECTURE.md and TAC_METHOD.md.

Number of semantic centres (the rule): ``M = min(N, max(round(N / 300), 3·K, 10))``. N/300 is the
reference's rule (167 centres for 50,000 images); the floor 3·K (the reference's choice for DTD and UCF101)
and 10 keeps a few hundred images from collapsing into one or two centres.

Cluster sizes (``balance``, see :mod:`tac_core.cluster.balance`): ``"estimated"`` (the default) lets clusters
be as unequal as the data is: free mode repairs the k-means partition by merge–split swaps, trained mode
aims the heads at that partition's size profile. ``"uniform"`` is the paper's equal-size setting.

Restarts of the semantic-centre k-means: ``clip(10^7 // (N·M), 1, 10)``. Which nouns are selected depends
on the centres, and small collections have many near-equal partitions, so they get up to 10 restarts
(cheap at that size); large ones are stable with one and would pay most for more.
"""
from __future__ import annotations

import inspect
import time
from typing import Optional

import numpy as np
import torch

from . import MODES
from .anchors import Anchor, cluster_anchors
from .balance import merge_split_repair
from .sizes import check_balance, size_profile, uneven
from ..devices import resolve_device
from ..errors import EmptyInputError, InvalidInputError
from .heads import fit_heads, warm_start_heads
from .kmeans import spherical_kmeans
from .neighbors import cosine_knn
from ..numerics import cluster_unit_means, flush_denormals, normalize_rows, unit_rows_array, validated_unit_rows
from ..progress import CancelToken, ProgressFn, report

CHUNK_ROWS = 8192
FREE_CONFIDENCE_TEMPERATURE = 0.05


def semantic_center_count(n_images: int, n_clusters: int) -> int:
    """The documented rule for M, the number of semantic centres (see the module docstring)."""
    return int(min(n_images, max(round(n_images / 300), 3 * n_clusters, 10)))


def semantic_center_restarts(n_images: int, n_centers: int) -> int:
    """The documented number of k-means restarts for the semantic centres (see the module docstring)."""
    return int(np.clip(10**7 // max(1, n_images * n_centers), 1, 10))


def select_nouns(centers: np.ndarray, vocab_embeddings: np.ndarray, top_per_center: int = 5,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """Indices of the nouns that fit the image centres, sorted.

    Each noun gets a softmax over the centres of (centre · noun) and goes to its argmax centre with that
    probability as confidence; each centre keeps its ``top_per_center`` most confident nouns.
    """
    c = torch.as_tensor(centers, dtype=torch.float32, device=device)
    n_vocab = vocab_embeddings.shape[0]
    owner = np.empty(n_vocab, dtype=np.int64)
    confidence = np.empty(n_vocab, dtype=np.float32)
    for start in range(0, n_vocab, CHUNK_ROWS):
        v = torch.as_tensor(vocab_embeddings[start:start + CHUNK_ROWS], dtype=torch.float32, device=device)
        prob = torch.softmax(v @ c.T, dim=1)
        conf, arg = prob.max(dim=1)
        owner[start:start + len(v)] = arg.cpu().numpy()
        confidence[start:start + len(v)] = conf.cpu().numpy()
    order = np.lexsort((np.arange(n_vocab), -confidence, owner))  # by centre, then confidence descending
    rank_in_center = np.arange(n_vocab) - np.searchsorted(owner[order], owner[order], side="left")
    return np.sort(order[rank_in_center < top_per_center])


def text_counterparts(image_embeddings: np.ndarray, text_space: np.ndarray, tau: float = 0.005,
                      device: str | torch.device = "cpu") -> np.ndarray:
    """t_i = normalise(softmax(x_i · Tᵀ / τ) · T): each image's sharp convex mix of its closest nouns."""
    t = torch.as_tensor(text_space, dtype=torch.float32, device=device)
    out = np.empty((image_embeddings.shape[0], t.shape[1]), dtype=np.float32)
    for start in range(0, len(out), CHUNK_ROWS):
        x = torch.as_tensor(image_embeddings[start:start + CHUNK_ROWS], dtype=torch.float32, device=device)
        mix = torch.softmax(x @ t.T / tau, dim=1) @ t
        out[start:start + len(x)] = normalize_rows(mix).cpu().numpy()
    return out


def check_n_clusters(k, n_images: int) -> None:
    """Raise :class:`InvalidInputError` unless 2 ≤ K ≤ the number of images (checked before embedding, too)."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2:
        raise InvalidInputError(f"the number of clusters K must be an integer of at least 2; got {k!r}.")
    if k > n_images:
        raise InvalidInputError(f"K = {k} is larger than the number of images ({n_images}); choose K ≤ {n_images}.")


class TAC:
    """Text-Aided Clustering of image embeddings with a vocabulary of text embeddings.

    Parameters follow TAC_METHOD.md: ``tau=0.005``, 5 nouns per centre, and in trained mode 50 neighbours,
    20 epochs, batch 512, Adam 1e-3, temperature 0.5 (5.0 and batch 8192 for K ≥ 100), entropy weight 5.

    Fitted attributes: ``labels_``, ``confidence_`` (image-head probability in trained mode; in free mode the
    softmax over centre similarities at temperature 0.05, a smooth function of the nearest/second margin),
    ``margin_`` (free mode), ``swaps_`` (the merge–split swaps of the free partition, ``[]`` with
    ``balance="uniform"``), ``size_prior_`` (trained mode: the size profile the heads aimed at; ``None`` when
    uniform), ``probabilities_`` / ``text_probabilities_`` / ``text_labels_`` / ``heads_`` (trained;
    ``heads_`` holds both heads' state dicts), ``n_centers_``,
    ``semantic_centers_``, ``selected_indices_`` (the filtered nouns), ``text_indices_`` (the rows of the text
    space: selected nouns plus domain terms), ``counterparts_``, ``cluster_centers_`` (K × 2d, unit rows,
    in the concatenated space), ``anchors_`` (per cluster, (vocabulary index, score) best first),
    ``timings_`` (seconds per stage).
    """

    def __init__(self, n_clusters: int = 10, mode: str = "free", n_centers: int | str = "auto",
                 top_per_center: int = 5, tau: float = 0.005, include_domain_terms: bool = True,
                 n_init: int = 10, max_iter: int = 100, epochs: int = 20, batch_size: int | str = "auto",
                 lr: float = 1e-3, temperature: float | str = "auto", entropy_weight: float = 5.0,
                 n_neighbors: int = 50, n_anchors: int = 10, balance: str = "estimated", device: str = "cpu",
                 random_state: Optional[int] = None, progress: Optional[ProgressFn] = None,
                 cancel: Optional[CancelToken] = None):
        self.n_clusters = n_clusters
        self.mode = mode
        self.n_centers = n_centers
        self.top_per_center = top_per_center
        self.tau = tau
        self.include_domain_terms = include_domain_terms
        self.n_init = n_init
        self.max_iter = max_iter
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.temperature = temperature
        self.entropy_weight = entropy_weight
        self.n_neighbors = n_neighbors
        self.n_anchors = n_anchors
        self.balance = balance
        self.device = device
        self.random_state = random_state
        self.progress = progress
        self.cancel = cancel

    # -- scikit-learn's estimator protocol (without depending on scikit-learn) ----------------------
    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments by name, so that ``sklearn.base.clone`` and parameter searches work
        (``deep`` is scikit-learn's flag for nested estimators; TAC holds none)."""
        return {name: getattr(self, name) for name in inspect.signature(type(self)).parameters}

    def set_params(self, **params) -> "TAC":
        """Change constructor arguments by name (they are checked at :meth:`fit`); returns ``self``."""
        unknown = sorted(set(params) - set(self.get_params()))
        if unknown:
            raise InvalidInputError(f"TAC has no parameter {', '.join(map(repr, unknown))}; "
                                    f"valid: {', '.join(self.get_params())}.")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __getattr__(self, name: str):
        """Only called for a missing attribute: a fitted one (``labels_`` …) read before :meth:`fit` says so."""
        if name.endswith("_") and not name.startswith("__") and "labels_" not in vars(self):
            raise AttributeError(f"this TAC is not fitted yet, so it has no {name}: call "
                                 "fit(image_embeddings, vocab_embeddings) first.")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- validation ---------------------------------------------------------------------------------
    def _validate(self, image_embeddings, vocab_embeddings, domain_mask):
        x = validated_unit_rows("image embeddings", image_embeddings)
        v = validated_unit_rows("vocabulary embeddings", vocab_embeddings)
        if x.shape[1] != v.shape[1]:
            raise InvalidInputError(f"image embeddings have {x.shape[1]} dimensions but vocabulary embeddings have "
                                    f"{v.shape[1]}; both must come from the same model.")
        if self.mode not in MODES:
            raise InvalidInputError(f"mode must be one of {MODES}; got {self.mode!r}.")
        check_balance(self.balance)
        n = x.shape[0]
        if n < 2:
            raise EmptyInputError(f"clustering needs at least 2 images; got {n}.")
        check_n_clusters(self.n_clusters, n)
        if self.n_centers != "auto" and not (isinstance(self.n_centers, (int, np.integer)) and 1 <= self.n_centers <= n):
            raise InvalidInputError(f"n_centers must be 'auto' or an integer between 1 and {n}; got {self.n_centers!r}.")
        if domain_mask is None:
            domain_mask = np.zeros(v.shape[0], dtype=bool)
        domain_mask = np.asarray(domain_mask, dtype=bool)
        if domain_mask.shape != (v.shape[0],):
            raise InvalidInputError(f"domain_mask must have one entry per vocabulary row ({v.shape[0]}); "
                                    f"got shape {domain_mask.shape}.")
        return x, v, domain_mask

    def _device(self) -> torch.device:
        return resolve_device(self.device)

    # -- fitting ------------------------------------------------------------------------------------
    def fit(self, image_embeddings, vocab_embeddings, domain_mask=None) -> "TAC":
        """Cluster ``image_embeddings`` (N × d) guided by ``vocab_embeddings`` (V × d).

        ``domain_mask`` (V booleans) marks the user's domain terms: they join the text space whether or not
        the noun filter keeps them (unless ``include_domain_terms=False``) and are always anchor candidates.
        """
        x, v, domain_mask = self._validate(image_embeddings, vocab_embeddings, domain_mask)
        for name in [name for name in vars(self) if name.endswith("_") and not name.startswith("_")]:
            delattr(self, name)  # a refit, perhaps in another mode, keeps nothing of the previous fit
        with flush_denormals():
            return self._fit(x, v, domain_mask, self._device())

    def _fit(self, x: np.ndarray, v: np.ndarray, domain_mask: np.ndarray, device: torch.device) -> "TAC":
        seed = self.random_state
        k = int(self.n_clusters)
        timings: dict[str, float] = {}

        start = time.perf_counter()
        self.n_centers_ = semantic_center_count(len(x), k) if self.n_centers == "auto" else int(self.n_centers)
        centers = spherical_kmeans(x, self.n_centers_, n_init=semantic_center_restarts(len(x), self.n_centers_),
                                   max_iter=self.max_iter, random_state=seed,
                                   device=device, progress=self.progress, stage="selecting nouns",
                                   cancel=self.cancel)
        self.semantic_centers_ = centers.centers
        self.selected_indices_ = select_nouns(centers.centers, v, self.top_per_center, device)
        text_rows = self.selected_indices_
        if self.include_domain_terms:
            text_rows = np.union1d(text_rows, np.flatnonzero(domain_mask))
        self.text_indices_ = text_rows
        self.counterparts_ = text_counterparts(x, v[text_rows], self.tau, device)
        timings["select_nouns"] = time.perf_counter() - start

        start = time.perf_counter()
        features = np.concatenate([x, self.counterparts_], axis=1)
        features *= np.float32(np.sqrt(0.5))  # unit rows [x, t]/√2: k-means then needs no normalised copy
        if self.mode == "free":
            self._fit_free(features, k, device)
            timings["cluster"] = time.perf_counter() - start
        else:
            self._fit_trained(x, features, k, device)
            timings["train"] = time.perf_counter() - start
        self.cluster_centers_ = cluster_unit_means(features, self.labels_, k)

        start = time.perf_counter()
        candidates = np.union1d(self.selected_indices_, np.flatnonzero(domain_mask))
        self.anchors_: list[list[Anchor]] = cluster_anchors(self.counterparts_, self.labels_, k, v, candidates,
                                                            self.n_anchors)
        timings["anchors"] = time.perf_counter() - start
        self.timings_ = timings
        return self

    def fit_predict(self, image_embeddings, vocab_embeddings, domain_mask=None) -> np.ndarray:
        return self.fit(image_embeddings, vocab_embeddings, domain_mask).labels_

    def _free_partition(self, features: np.ndarray, k: int, device: torch.device, stage: str = "clustering"):
        """k-means on [x, t], repaired by merge–split swaps unless ``balance="uniform"``: (result, centres).

        Trained mode reports it as "estimating sizes": the partition only tells the heads which sizes to aim at.
        """
        result = spherical_kmeans(features, k, n_init=self.n_init, max_iter=self.max_iter,
                                  random_state=self.random_state, device=device, progress=self.progress,
                                  stage=stage, cancel=self.cancel)
        self.swaps_ = []
        if self.balance == "estimated":
            result.labels, self.swaps_ = merge_split_repair(features, result.labels, k,
                                                            random_state=self.random_state, device=device,
                                                            cancel=self.cancel)
        return result, cluster_unit_means(features, result.labels, k) if self.swaps_ else result.centers

    def _fit_free(self, features: np.ndarray, k: int, device: torch.device) -> None:
        result, centers = self._free_partition(features, k, device)
        self.labels_ = result.labels
        self.n_iter_ = result.n_iter
        sims = np.concatenate([unit_rows_array(features[s:s + CHUNK_ROWS]) @ centers.T
                               for s in range(0, len(features), CHUNK_ROWS)])  # no second N × 2d copy
        self.objective_ = float(sims[np.arange(len(sims)), self.labels_].astype(np.float64).mean()
                                if self.swaps_ else result.objective)
        top2 = np.sort(sims, axis=1)[:, -2:] if k > 1 else np.repeat(sims, 2, axis=1)
        self.margin_ = (top2[:, 1] - top2[:, 0]).astype(np.float32)
        logits = sims / FREE_CONFIDENCE_TEMPERATURE
        prob = np.exp(logits - logits.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        self.confidence_ = prob[np.arange(len(prob)), self.labels_].astype(np.float32)

    def _fit_trained(self, x: np.ndarray, features: np.ndarray, k: int, device: torch.device) -> None:
        batch_size = (8192 if k >= 100 else 512) if self.batch_size == "auto" else int(self.batch_size)
        temperature = (5.0 if k >= 100 else 0.5) if self.temperature == "auto" else float(self.temperature)
        self.size_prior_, self.swaps_, start_state = None, [], None
        if self.balance == "estimated":  # unequal sizes only where the free partition found them unequal
            free_labels = self._free_partition(features, k, device, stage="estimating sizes")[0].labels
            if uneven(size_profile(free_labels, k)):
                self.size_prior_ = size_profile(free_labels, k)
                start_state = warm_start_heads(x, self.counterparts_, free_labels, k, batch_size=batch_size,
                                               lr=self.lr, random_state=self.random_state, device=device,
                                               cancel=self.cancel)
        n_neighbors = min(self.n_neighbors, len(x) - 1)
        report(self.progress, "finding neighbours", 0, 2)
        image_nbrs, _ = cosine_knn(x, n_neighbors, device=device)
        report(self.progress, "finding neighbours", 1, 2)
        text_nbrs, _ = cosine_knn(self.counterparts_, n_neighbors, device=device)
        report(self.progress, "finding neighbours", 2, 2)
        heads = fit_heads(x, self.counterparts_, k, image_nbrs, text_nbrs, epochs=self.epochs,
                          batch_size=batch_size, lr=self.lr, temperature=temperature,
                          entropy_weight=self.entropy_weight, random_state=self.random_state, device=device,
                          progress=self.progress, cancel=self.cancel, size_prior=self.size_prior_,
                          initial_state=start_state)
        p, q = heads.probabilities, heads.text_probabilities
        self.heads_ = heads.state  # {"image", "text"} state dicts: re-clustering fine-tunes from them
        self.probabilities_ = p
        self.text_probabilities_ = q
        self.labels_ = p.argmax(axis=1).astype(np.int64)
        self.text_labels_ = q.argmax(axis=1).astype(np.int64)
        self.confidence_ = p.max(axis=1).astype(np.float32)
