"""Sorting new images into a finished clustering: one prototype per cluster, a confidence, and a novelty score
that sends an image fitting no cluster to an "unsorted" bucket instead of forcing it into one.

**Assignment** happens in the clustering's own space: a cluster's prototype is the normalised mean of its
reference members' TAC features ``[x, t] / √2`` (``t`` the sharp counterpart at the run's τ), taken from the
members a reviewer verified where the cluster has any (``prefer``), else from all of them. A new image goes
to the most similar prototype (cosine), with free TAC's confidence: the softmax of its prototype
similarities at temperature 0.05.

**Novelty** is measured in a softer view of the same space: counterparts mixed at a τ set so that each
image's mix weighs about :data:`NOVELTY_NOUNS` (50) nouns (:func:`novelty_temperature`, on the reference
images). The sharp counterpart snaps to a handful of nouns, so an image of a known kind whose counterpart
snapped to the wrong nouns sits as far from its prototype as an image of an unknown kind; a mix of many nouns
keeps the two apart. The mix is set by its width, not by a fixed τ, because the best τ moves with the text
space's size and the model's similarity scale: on the synthetic bed of ``bench.intake`` the best fixed τ was
0.1 for a 135-noun text space (10,000 images) and 0.05 for a 561-noun one (50,000), both mixes of about 50
nouns. Each cluster's spread is calibrated on its own members: the median ``m_c`` and the MAD ``s_c``
(× 1.4826) of their distances ``1 − cos`` to its soft prototype; a cluster with fewer than
:data:`MIN_CALIBRATION` members borrows the median of the others'. An image's novelty is
``min_c (d_c − m_c) / s_c``: how many spreads beyond a typical member it lies, measured from the cluster it
fits best. The bucket's threshold is the :data:`NOVEL_QUANTILE` quantile of the reference members' own
novelty: about 2 % of images like those already sorted land in the bucket.

Cost: the sharp prototypes take one pass over the reference rows; the soft view only needs up to
:data:`SAMPLE_PER_CLUSTER` rows per cluster (a mean and a median are settled long before that), so fitting
stays a fraction of a second at 50,000 images and sorting is two matrix products per new image.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..errors import InvalidInputError
from ..numerics import flush_denormals, normalize_rows, unit_rows_array
from .tac import CHUNK_ROWS, FREE_CONFIDENCE_TEMPERATURE

NOVELTY_NOUNS = 50  # how many nouns the soft view's mix weighs (its perplexity)
CALIBRATION_SAMPLE = 500  # reference images the soft view's τ is set on
SAMPLE_PER_CLUSTER = 1000  # a cluster's rows that make its soft prototype and calibrate its spread
NOVEL_QUANTILE = 0.98
MIN_CALIBRATION = 5  # members a cluster needs to calibrate its own spread
MAD_SCALE = 1.4826  # MAD → standard deviation of a normal distribution
_FLOOR = 1e-6


@dataclass(frozen=True)
class Assignment:
    """Where new images go: per image its nearest ``cluster`` (an id of the prototypes), ``confidence``,
    ``novelty`` and ``novel`` (novelty above the threshold: the bucket), and its sharp ``counterparts``."""

    cluster: np.ndarray
    confidence: np.ndarray
    novelty: np.ndarray
    novel: np.ndarray
    counterparts: np.ndarray


@dataclass(frozen=True)
class ClusterPrototypes:
    """A finished clustering as a classifier of new image embeddings (see the module docstring).

    ``clusters`` are the ids the rows of ``centers`` (sharp view) and ``novelty_centers`` (soft view) stand
    for; ``median`` and ``spread`` calibrate each cluster's distances; ``text_space`` and ``tau`` make the
    counterparts of new images as the run made its own.
    """

    clusters: np.ndarray
    centers: np.ndarray
    novelty_centers: np.ndarray
    median: np.ndarray
    spread: np.ndarray
    threshold: float
    text_space: np.ndarray
    tau: float
    novelty_tau: float

    def assign(self, image_embeddings: np.ndarray, device: str | torch.device = "cpu") -> Assignment:
        """Sort new images (M × d unit rows, the run's model) into the clusters; nothing is changed."""
        x = unit_rows_array(image_embeddings)
        if x.ndim != 2 or x.shape[1] != self.text_space.shape[1]:
            raise InvalidInputError(f"the new image embeddings have shape {x.shape} but the clustering was made from "
                                    f"{self.text_space.shape[1]}-dimensional ones; embed them with the run's model.")
        sharp, soft = _mixes(x, self.text_space, (self.tau, self.novelty_tau), device)
        sims = _features(x, sharp) @ self.centers.T
        nearest = sims.argmax(axis=1)
        logits = sims / FREE_CONFIDENCE_TEMPERATURE
        prob = np.exp(logits - logits.max(axis=1, keepdims=True))
        confidence = prob[np.arange(len(x)), nearest] / prob.sum(axis=1)
        novelty = self._novelty(_features(x, soft))
        return Assignment(self.clusters[nearest], confidence.astype(np.float32), novelty,
                          novelty > self.threshold, sharp)

    def _novelty(self, soft_features: np.ndarray) -> np.ndarray:
        distance = 1 - soft_features @ self.novelty_centers.T
        return ((distance - self.median) / self.spread).min(axis=1).astype(np.float32)

    # -- stored form (the CLI's classifier.npz) ----------------------------------------------------------
    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, clusters=self.clusters, centers=self.centers, novelty_centers=self.novelty_centers,
                 median=self.median, spread=self.spread, text_space=self.text_space,
                 scalars=np.array([self.threshold, self.tau, self.novelty_tau], np.float64))
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path) -> "ClusterPrototypes":
        """Read what :meth:`to_bytes` wrote, or :class:`InvalidInputError` naming the file."""
        try:
            with np.load(path, allow_pickle=False) as data:
                threshold, tau, novelty_tau = (float(v) for v in data["scalars"])
                return cls(data["clusters"], data["centers"], data["novelty_centers"], data["median"],
                           data["spread"], threshold, data["text_space"], tau, novelty_tau)
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidInputError(f"{path} is not a classifier written by `python -m tac_core cluster` ({exc}); "
                                    "run the clustering again.") from exc


def fit_prototypes(image_embeddings: np.ndarray, counterparts: np.ndarray, labels: np.ndarray,
                   text_space: np.ndarray, tau: float, prefer: Optional[np.ndarray] = None,
                   skip: tuple[int, ...] = (), device: str | torch.device = "cpu") -> ClusterPrototypes:
    """Prototypes and calibration from a clustering's reference images (rows: image embeddings, their sharp
    counterparts, labels; −1 and the clusters in ``skip``, e.g. the unsorted bucket, are no reference).

    ``prefer`` (booleans, e.g. verified) marks the members a cluster's prototype is made of when it has any.
    """
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    if image_embeddings.shape[0] != n or counterparts.shape[0] != n:
        raise InvalidInputError(f"{image_embeddings.shape[0]} image embeddings, {counterparts.shape[0]} counterparts "
                                f"and {n} labels must describe the same images.")
    reference = (labels >= 0) & ~np.isin(labels, list(skip))
    clusters = np.unique(labels[reference])
    if len(clusters) == 0:
        raise InvalidInputError("no cluster has an image to sort new images by; include or verify some images first.")
    row = np.full(int(labels.max(initial=0)) + 1, -1, np.int64)
    row[clusters] = np.arange(len(clusters))
    member = np.where(reference, row[np.maximum(labels, 0)], -1)
    preferred = np.zeros(n, bool) if prefer is None else np.asarray(prefer, bool) & reference
    has_preferred = np.bincount(member[preferred], minlength=len(clusters)) > 0
    basis = np.where(has_preferred[np.maximum(member, 0)], preferred, reference) & reference
    t_space, k = unit_rows_array(text_space), len(clusters)
    centers = _sharp_centers(image_embeddings, counterparts, member, basis, k)
    centre_rows, calibration_rows = _capped(member, basis, k), _capped(member, reference, k)
    novelty_tau = novelty_temperature(image_embeddings[calibration_rows[_spaced(len(calibration_rows),
                                                                                CALIBRATION_SAMPLE)]], t_space)
    soft_sum = torch.zeros((k, 2 * t_space.shape[1]), dtype=torch.float64)
    for rows, soft in _soft_chunks(image_embeddings, centre_rows, t_space, novelty_tau, device):
        soft_sum.index_add_(0, torch.as_tensor(member[rows]), torch.as_tensor(soft).double())
    soft_centers = unit_rows_array(soft_sum.numpy())
    distance = np.concatenate([1 - soft @ soft_centers.T for _, soft in
                               _soft_chunks(image_embeddings, calibration_rows, t_space, novelty_tau, device)])
    own = member[calibration_rows]
    median, spread = _calibrate(distance, own, k)
    novelty = ((distance - median) / spread).min(axis=1)
    weight = np.bincount(member[reference], minlength=k) / np.bincount(own, minlength=k)  # undo the per-cluster cap
    threshold = _weighted_quantile(novelty, weight[own], NOVEL_QUANTILE)
    return ClusterPrototypes(clusters, centers, soft_centers, median, spread, threshold,
                             t_space.astype(np.float32), float(tau), novelty_tau)


def _sharp_centers(image_embeddings, counterparts, member, basis, k: int) -> np.ndarray:
    """The normalised means of the basis rows' TAC features [x, t] / √2 per cluster: the sums of x and of t,
    in row chunks (float32: sums of unit rows)."""
    sums = torch.zeros((k, image_embeddings.shape[1] + counterparts.shape[1]))
    d = image_embeddings.shape[1]
    for start in range(0, len(member), CHUNK_ROWS):
        part = slice(start, start + CHUNK_ROWS)
        keep = np.flatnonzero(basis[part])
        index = torch.as_tensor(member[part][keep])
        sums[:, :d].index_add_(0, index, torch.as_tensor(unit_rows_array(image_embeddings[part][keep])))
        sums[:, d:].index_add_(0, index, torch.as_tensor(unit_rows_array(counterparts[part][keep])))
    return unit_rows_array(sums.numpy())


def _capped(member: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """The rows of ``mask``, at most :data:`SAMPLE_PER_CLUSTER` per cluster (evenly spaced), sorted."""
    rows = np.flatnonzero(mask & (member >= 0))
    rows = rows[np.argsort(member[rows], kind="stable")]
    bounds = np.searchsorted(member[rows], np.arange(k + 1))
    kept = [rows[lo:hi][_spaced(hi - lo, SAMPLE_PER_CLUSTER)] for lo, hi in zip(bounds[:-1], bounds[1:])]
    return np.sort(np.concatenate(kept))


def _spaced(n: int, at_most: int) -> np.ndarray:
    """At most ``at_most`` evenly spaced indices of ``range(n)``."""
    return np.unique(np.linspace(0, n - 1, min(n, at_most)).astype(np.int64)) if n else np.zeros(0, np.int64)


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][min(np.searchsorted(cumulative, q * cumulative[-1]), len(values) - 1)])


def _soft_chunks(image_embeddings: np.ndarray, rows: np.ndarray, text_space: np.ndarray, tau: float, device):
    """(rows, soft features) per chunk of the given rows: never all of them at once."""
    for start in range(0, len(rows), CHUNK_ROWS):
        part = rows[start:start + CHUNK_ROWS]
        x = unit_rows_array(image_embeddings[part])
        yield part, _features(x, _mixes(x, text_space, (tau,), device)[0])


def _mixes(x: np.ndarray, text_space: np.ndarray, taus: tuple[float, ...], device) -> list[np.ndarray]:
    """For each τ, every row's counterpart normalise(softmax(x · Tᵀ / τ) · T) (as
    :func:`~tac_core.cluster.tac.text_counterparts`), all from one product x · Tᵀ per chunk."""
    t = torch.as_tensor(text_space, dtype=torch.float32, device=device)
    out = [np.empty((len(x), t.shape[1]), np.float32) for _ in taus]
    with flush_denormals():  # TAC's sharp softmax makes subnormal numbers, slow on CPUs
        for start in range(0, len(x), CHUNK_ROWS):
            sims = torch.as_tensor(x[start:start + CHUNK_ROWS], dtype=torch.float32, device=device) @ t.T
            for mix, tau in zip(out, taus):
                mix[start:start + len(sims)] = normalize_rows(torch.softmax(sims / tau, dim=1) @ t).cpu().numpy()
    return out


def novelty_temperature(image_embeddings: np.ndarray, text_space: np.ndarray) -> float:
    """The τ at which these images' noun mixes weigh about :data:`NOVELTY_NOUNS` nouns each (at most half the
    text space): the mean perplexity exp(entropy) of softmax(x · Tᵀ / τ), found by bisection on log τ."""
    sims = torch.as_tensor(unit_rows_array(image_embeddings) @ text_space.T)
    target = min(NOVELTY_NOUNS, len(text_space) / 2)
    low, high = np.log(1e-4), np.log(10.0)
    for _ in range(16):  # the bracket shrinks to a ratio of 1.0002
        mid = (low + high) / 2
        log_p = torch.log_softmax(sims / np.exp(mid), dim=1)
        perplexity = float(torch.exp(-(log_p.exp() * log_p).sum(dim=1)).mean())
        low, high = (mid, high) if perplexity < target else (low, mid)
    return float(np.exp((low + high) / 2))


def _calibrate(distance: np.ndarray, member: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster, the median and MAD spread of its members' distances to its own soft prototype; small
    clusters borrow the others' medians, and no spread is below a tenth of the typical one."""
    median, spread = np.zeros(k, np.float32), np.zeros(k, np.float32)
    sizes = np.bincount(member[member >= 0], minlength=k)
    for c in np.flatnonzero(sizes):
        own = distance[member == c, c]
        median[c] = np.median(own)
        spread[c] = MAD_SCALE * np.median(np.abs(own - median[c]))
    enough = sizes >= MIN_CALIBRATION
    if enough.any():
        median[~enough], spread[~enough] = np.median(median[enough]), np.median(spread[enough])
    floor = max(0.1 * float(np.median(spread)), _FLOOR)
    return median, np.maximum(spread, floor)


def _features(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """TAC's joint rows [x, t] / √2 in float32 (unit rows when x and t are)."""
    return np.concatenate([x, unit_rows_array(t)], axis=1, dtype=np.float32) * np.float32(np.sqrt(0.5))
