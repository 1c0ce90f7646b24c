"""Suggest the number of clusters K, because users rarely know it.

The sweep runs on TAC's concatenated features ``[x, t]`` (image embedding, text counterpart), the space the
free TAC clustering uses. Counterparts depend on the semantic centres, whose number M depends on K; they
are computed **once** for the whole sweep with M from the largest K in the range
(``semantic_center_count(n, k_max)``), so every K is scored on the same features and the text space is fine
enough for the largest K. (On the synthetic bed at 512 dimensions this found the true K in 15 of 15 cases,
M from the smallest K in 12.) Collections above ``max_points`` (2,000) images are swept on a random sample
of that size — centres, counterparts, clustering and scores alike — so 50,000 images cost what 2,000 do.

Scores per K (all on the swept points):

- **stability** — ``n_seeds`` k-means runs, each on its own random 80 % subsample and seed; every run's
  centres then label all swept points, and stability is the mean ARI over all pairs of runs. A K that
  splits a real group arbitrarily, or merges two of them in varying ways, gets a low value.
- **silhouette** — mean cosine silhouette of the best-objective run's labels, computed exactly from
  per-cluster sums (O(N·K·d), so no further subsample is needed).
- **objective** — that run's mean cosine similarity of points to their centre (for the table; it always
  grows with K, so it does not choose).

With ``balance="estimated"`` (the default, as in :class:`~tac_core.cluster.tac.TAC`) every run's k-means
partition is repaired by :func:`~tac_core.cluster.balance.merge_split_repair` before its centres label the
swept points, so a dominant class is scored whole instead of cut in pieces: on synthetic beds with one class
at 50 % and three under 3 % the equal-size sweep (``"uniform"``) proposed K values at which TAC cut the
big class in three, the default proposed K values that kept 82–98 % of it in one cluster (README, *Unequal
cluster sizes*).

The rule: **the K with the highest silhouette among those whose stability ≥ ``stability_threshold``
(0.9); K values whose silhouette is within 0.01 of that best count as ties and the smallest wins.** If no K
is that stable, the K with the highest silhouette overall (same tie rule), and the explanation says so.

The sweep runs torch on one CPU thread: its matrices are small, and on a busy 2-core machine two threads
made it 17× slower (18 s vs 1.1 s for 1,000 images), the spin-wait effect ``numerics.single_cpu_thread``
describes. Measured there (512-d, K 2..30, 20,000 nouns, load ≈ 2): 1,000 images 2.8 s, 5,000 4.8 s,
50,000 4.7 s; about twice that at load 5.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Optional

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from ..devices import resolve_device
from ..errors import InvalidInputError
from .balance import merge_split_repair
from .sizes import check_balance
from .kmeans import spherical_kmeans
from ..numerics import cluster_unit_means, flush_denormals, single_cpu_thread, validated_unit_rows
from ..progress import CancelToken, ProgressFn, check_cancel, report
from .tac import (select_nouns, semantic_center_count, semantic_center_restarts,
                  text_counterparts)

STAGE = "suggesting K"
DEFAULT_MAX_K = 30
MIN_POINTS_PER_CLUSTER = 5
SUBSAMPLE_FRACTION = 0.8
SILHOUETTE_TIE = 0.01
MAX_CENTER_RESTARTS = 3  # the sweep needs counterparts that are about right, not the best of ten
SWEEP_MAX_ITER = 50


@dataclass(frozen=True)
class KScore:
    """One row of the sweep table."""
    k: int
    silhouette: float
    stability: float
    objective: float


@dataclass(frozen=True)
class KSuggestion:
    """The suggested K, the table it was chosen from (``pandas.DataFrame(s.rows())``) and why, in words."""
    best_k: int
    scores: list[KScore]
    explanation: str
    stability_threshold: float
    n_points_used: int

    def rows(self) -> list[dict]:
        return [asdict(score) for score in self.scores]


def default_k_range(n_images: int) -> tuple[int, int]:
    """2 .. min(30, N/5), at least 2 .. 2 and never more than N − 1 clusters."""
    return 2, max(2, min(DEFAULT_MAX_K, n_images // MIN_POINTS_PER_CLUSTER, n_images - 1))


def cosine_silhouette(features, labels) -> float:
    """Mean silhouette with cosine distance, exact, in O(N·K·d) rather than O(N²·d).

    For unit rows the mean cosine distance from x to a cluster C is ``1 − x·sum(C)/|C|``, so per-cluster
    sums replace the pairwise matrix. Points alone in their cluster score 0 (scikit-learn's convention).
    """
    x = torch.nn.functional.normalize(torch.as_tensor(features).double(), dim=1)
    labels = torch.as_tensor(np.unique(np.asarray(labels), return_inverse=True)[1].ravel())
    n_clusters = int(labels.max()) + 1
    if not 2 <= n_clusters <= len(x) - 1:
        raise InvalidInputError(f"the silhouette needs between 2 and {len(x) - 1} clusters; got {n_clusters}.")
    sums = torch.zeros((n_clusters, x.shape[1]), dtype=torch.float64).index_add_(0, labels, x)
    sizes = torch.bincount(labels, minlength=n_clusters).double()
    mean_dist = 1.0 - (x @ sums.T) / sizes  # (N, K): mean distance to every cluster, self included
    rows = torch.arange(len(x))
    own_size = sizes[labels]
    own = mean_dist[rows, labels] * own_size / (own_size - 1).clamp_min(1)  # self contributes distance 0
    mean_dist[rows, labels] = torch.inf
    nearest_other = mean_dist.min(dim=1).values
    score = (nearest_other - own) / torch.maximum(own, nearest_other).clamp_min(1e-12)
    score[own_size == 1] = 0.0
    return float(score.mean())


def tac_sweep_features(image_embeddings: np.ndarray, vocab_embeddings: np.ndarray, k_max: int,
                       domain_mask: Optional[np.ndarray] = None, top_per_center: int = 5, tau: float = 0.005,
                       random_state: Optional[int] = 0, device: str | torch.device = "cpu",
                       cancel: Optional[CancelToken] = None) -> np.ndarray:
    """``[x, t]`` (N × 2d), counterparts built as TAC builds them with M = ``semantic_center_count(N, k_max)``."""
    n_centers = semantic_center_count(len(image_embeddings), k_max)
    restarts = min(MAX_CENTER_RESTARTS, semantic_center_restarts(len(image_embeddings), n_centers))
    centers = spherical_kmeans(image_embeddings, n_centers, n_init=restarts, random_state=random_state,
                               device=device, cancel=cancel).centers
    text_rows = select_nouns(centers, vocab_embeddings, top_per_center, device)
    if domain_mask is not None:
        text_rows = np.union1d(text_rows, np.flatnonzero(domain_mask))
    counterparts = text_counterparts(image_embeddings, vocab_embeddings[text_rows], tau, device)
    return np.concatenate([image_embeddings, counterparts], axis=1)


def suggest_k(image_embeddings, vocab_embeddings, domain_mask=None, k_min: int = 2, k_max: Optional[int] = None,
              n_seeds: int = 3, n_init: int = 2, stability_threshold: float = 0.9, max_points: int = 2000,
              balance: str = "estimated", random_state: Optional[int] = 0, device: str = "cpu",
              progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None) -> KSuggestion:
    """Suggest K for TAC on these images and this vocabulary (the rule is in the module docstring).

    ``k_max`` defaults to min(30, n/5) for the n images swept (at most ``max_points``, a random sample of
    larger collections). ``domain_mask`` marks the user's domain terms, which join the text space as in
    :class:`tac_core.cluster.tac.TAC`.
    """
    x = validated_unit_rows("image embeddings", image_embeddings)
    v = validated_unit_rows("vocabulary embeddings", vocab_embeddings)
    if x.shape[1] != v.shape[1]:
        raise InvalidInputError(f"image embeddings have {x.shape[1]} dimensions but vocabulary embeddings have "
                                f"{v.shape[1]}; both must come from the same model.")
    if domain_mask is not None:
        domain_mask = np.asarray(domain_mask, dtype=bool)
        if domain_mask.shape != (len(v),):
            raise InvalidInputError(f"domain_mask must have one entry per vocabulary row ({len(v)}); "
                                    f"got shape {domain_mask.shape}.")
    settings = dict(n_seeds=n_seeds, n_init=n_init, stability_threshold=stability_threshold, max_points=max_points)
    k_min, k_max = _check_settings(len(x), k_min, k_max, **settings)
    check_balance(balance)
    torch_device = resolve_device(device)
    rng = np.random.default_rng(random_state)
    report(progress, STAGE, 0, k_max - k_min + 1)
    with flush_denormals(), single_cpu_thread(torch_device):
        features = tac_sweep_features(x[_sample_rows(len(x), max_points, rng)], v, k_max, domain_mask,
                                      random_state=_child_seed(rng), device=torch_device, cancel=cancel)
    return suggest_k_on_features(features, k_min, k_max, random_state=_child_seed(rng), device=device,
                                 balance=balance, progress=progress, cancel=cancel, **settings)


def suggest_k_on_features(features, k_min: int = 2, k_max: Optional[int] = None, n_seeds: int = 3,
                          n_init: int = 2, stability_threshold: float = 0.9, max_points: int = 2000,
                          balance: str = "estimated", random_state: Optional[int] = 0, device: str = "cpu",
                          progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None) -> KSuggestion:
    """The sweep and the rule on any features (``suggest_k`` passes [x, t]; image embeddings alone work too)."""
    f = validated_unit_rows("features", features)
    k_min, k_max = _check_settings(len(f), k_min, k_max, n_seeds, n_init, stability_threshold, max_points)
    check_balance(balance)
    torch_device = resolve_device(device)
    rng = np.random.default_rng(random_state)
    f = f[_sample_rows(len(f), max_points, rng)]
    unit = torch.nn.functional.normalize(torch.as_tensor(f, device=torch_device), dim=1)
    subsample_size = max(min(len(f), k_max + 1), int(np.ceil(SUBSAMPLE_FRACTION * len(f))))
    scores = []
    report(progress, STAGE, 0, k_max - k_min + 1)
    with flush_denormals(), single_cpu_thread(torch_device):
        for k in range(k_min, k_max + 1):
            runs = []  # (objective, labels of every swept point), one per seed
            for _ in range(n_seeds):
                check_cancel(cancel)
                rows = torch.as_tensor(np.sort(rng.choice(len(f), size=subsample_size, replace=False)))
                run_seed = _child_seed(rng)
                centers = spherical_kmeans(unit[rows.to(torch_device)], k, n_init=n_init, max_iter=SWEEP_MAX_ITER,
                                           random_state=run_seed, device=torch_device, cancel=cancel)
                if balance == "estimated":
                    centers = _repaired_centers(unit[rows.to(torch_device)].cpu().numpy(), centers.labels, k,
                                                run_seed, torch_device, cancel)
                else:
                    centers = centers.centers
                best = (unit @ torch.as_tensor(centers, device=torch_device).T).max(dim=1)
                runs.append((float(best.values.double().mean()), best.indices.cpu().numpy()))
            stability = float(np.mean([adjusted_rand_score(a, b) for (_, a), (_, b) in combinations(runs, 2)]))
            objective, labels = max(runs, key=lambda run: run[0])
            # every point on one centre happens only when all points coincide: as unseparated as it gets
            silhouette = cosine_silhouette(f, labels) if len(np.unique(labels)) >= 2 else -1.0
            scores.append(KScore(k, silhouette, stability, objective))
            report(progress, STAGE, k - k_min + 1, k_max - k_min + 1)
    best_k, explanation = _choose(scores, stability_threshold)
    return KSuggestion(best_k, scores, explanation, stability_threshold, len(f))


def _repaired_centers(features, labels, k, seed, device, cancel) -> np.ndarray:
    """Centres of the k-means partition after merge–split swaps (empty clusters keep no centre)."""
    labels, _ = merge_split_repair(features, labels, k, random_state=seed, device=device, cancel=cancel)
    centers = cluster_unit_means(features, labels, k)
    return centers[np.bincount(labels, minlength=k) > 0]


def _choose(scores: list[KScore], threshold: float) -> tuple[int, str]:
    stable = [s for s in scores if s.stability >= threshold]
    pool = stable or scores
    top = max(s.silhouette for s in pool)
    best = min((s for s in pool if s.silhouette >= top - SILHOUETTE_TIE), key=lambda s: s.k)
    figures = f"silhouette {best.silhouette:.2f}, stability {best.stability:.2f}"
    if len(scores) == 1:
        return best.k, f"K = {best.k}: the only value in the range ({figures})."
    if stable:
        return best.k, (f"K = {best.k}: the most separated grouping that stays the same across resamples "
                        f"({figures}).")
    return best.k, (f"K = {best.k}: no K from {scores[0].k} to {scores[-1].k} gave the same grouping across "
                    f"resamples (best stability {max(s.stability for s in scores):.2f} < {threshold:.2f}); "
                    f"this is the most separated one ({figures}), so treat it as a starting point and expect "
                    f"to merge or split clusters.")


# -- inputs and randomness ----------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_settings(n: int, k_min, k_max, n_seeds, n_init, stability_threshold, max_points) -> tuple[int, int]:
    """The validated K range; every message names the value and the allowed range."""
    if n < 3:
        raise InvalidInputError(f"suggesting K needs at least 3 images; got {n}.")
    if not _is_int(max_points) or max_points < 3:
        raise InvalidInputError(f"max_points must be an integer of at least 3; got {max_points!r}.")
    if not _is_int(n_seeds) or n_seeds < 2:
        raise InvalidInputError(f"n_seeds must be an integer of at least 2 (stability compares seeds); "
                                f"got {n_seeds!r}.")
    if not _is_int(n_init) or n_init < 1:
        raise InvalidInputError(f"n_init must be an integer of at least 1; got {n_init!r}.")
    if not 0.0 <= stability_threshold <= 1.0:
        raise InvalidInputError(f"stability_threshold must lie between 0 and 1; got {stability_threshold!r}.")
    swept = min(n, max_points)
    if k_max is None:
        k_max = default_k_range(swept)[1]
    if not (_is_int(k_min) and _is_int(k_max) and 2 <= k_min <= k_max <= swept - 1):
        raise InvalidInputError(f"the K range must be integers with 2 ≤ k_min ≤ k_max ≤ {swept - 1} (one less "
                                f"than the {swept} images swept); got k_min={k_min!r}, k_max={k_max!r}.")
    return int(k_min), int(k_max)


def _sample_rows(n: int, max_points: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= max_points else np.sort(rng.choice(n, size=max_points, replace=False))


def _child_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))
