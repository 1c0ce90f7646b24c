"""Audit: a ranked queue of the samples most likely to sit in the wrong cluster, each with its reasons.

Five signals per sample, each in [0, 1] and explained by a short phrase:

- ``low_confidence`` — 1 − p(own cluster), rescaled by the 1 − 1/K of a uniform guess; p is the image head's
  probability (trained) or the softmax of the centre similarities at temperature 0.05 (free: TAC's own
  confidence, a smooth function of the nearest/second margin).
- ``cross_modal`` — the image view does not back the cluster the text-aided assignment chose:
  1 − softmax(x · image halves of the centres / T)[own]. TAC leans on the sharp counterpart; when the raw
  image points elsewhere, the counterpart probably snapped to the wrong nouns. T is calibrated without labels
  (the view's mean top probability = how often its top cluster agrees with the labels; ≤ 20,000 samples): a
  fixed T fits one model's similarity scale. Trained mode uses the centre halves too, not the two heads:
  the consistency loss trains the heads to agree, and on the synthetic bed their disagreement added nothing
  to confidence alone, while the image view added 10–15 points at the top 5 % (the text half only noise).
- ``neighbours`` — share of the k nearest neighbours (cosine in [x, t]) that sit in other clusters.
- ``atypicality`` — robust z of (1 − cosine to its own centre) against its cluster's median and MAD
  (× 1.4826), mapped by z / (z + 3.5): 0.5 at the usual outlier cut (a clip at 3.5 saturated ~9 % of the bed).
- ``duplicates`` — a near-duplicate (image cosine ≥ ``duplicate_threshold``, 0.98: a re-save, resize or light
  crop) sits in another cluster: 0.5 + 0.5 · (cos − threshold) / (1 − threshold) for the closest one (1.0 for
  an exact copy), else 0. Uniform collections (one part, one fixture) can come that close: raise it there.

``score`` = σ(Σ w·logit(s) / Σ w), signals clipped to [0.01, 0.99]: a weighted mean in log-odds (a
logarithmic opinion pool), so agreeing signals reinforce each other and one lukewarm signal cannot carry a
sample. :data:`DEFAULT_WEIGHTS` come from a small grid on synthetic beds, seeds 100–107 (``bench/audit.py``
reports seeds 0–4); a plain weighted mean lost to confidence alone in the top 10 %, the pool did not.
Neighbours and atypicality only cost precision on the bed (Gaussian blobs; neighbours in [x, t] follow the
counterpart, right or wrong) and keep 0.1 because on real collections outliers and mixed neighbourhoods are
worth a look. A split duplicate (weight 1) lifts a sample near the top (argued, not tuned: the bed has none).
Reasons name every signal ≥ 0.5, strongest contribution first, else the strongest one. ``rank`` 0 is the
most suspicious. The suggested cluster is a vote: the model's second choice (1), the neighbours' most common
other cluster (2 × its share), the image view's cluster when it differs (1.5), a near-duplicate's cluster
(3); ties go to the model's choice. Memory stays bounded at 200k samples: neighbours come from row blocks of
≤ 2^25 similarities (both spaces in one pass; above 30,000 samples on the CPU an approximate index, see
:mod:`tac_core.cluster.neighbors`), centre similarities from row chunks; nothing is n × n.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np

from ..devices import resolve_device
from ..errors import InvalidInputError
from .audit_signals import (calibrate_temperature, centre_views, logit, neighbour_pass, row_mode,
                            unit_means)
from ..numerics import unit_rows_array

SIGNALS = ("low_confidence", "cross_modal", "neighbours", "atypicality", "duplicates")
DEFAULT_WEIGHTS = {"low_confidence": 1.0, "cross_modal": 1.0, "neighbours": 0.1, "atypicality": 0.1,
                   "duplicates": 1.0}
ATYPICAL_Z = 3.5
REASON_MIN = 0.5  # a signal at or above this is named in the reasons
DUPLICATE_CANDIDATES = 5  # near-duplicates are looked for among this many nearest images
_VOTE_MODEL, _VOTE_NEIGHBOURS, _VOTE_IMAGE, _VOTE_DUPLICATE = 1.0, 2.0, 1.5, 3.0


@dataclass
class AuditResult:
    """Per-sample signals (each in [0, 1]), the combined score, the queue rank and the reasons.

    Samples that are not audited (label −1, or marked verified) get score 0, rank after every audited
    sample, suggested cluster −1 and the reason "excluded" / "verified".
    """
    labels: np.ndarray
    low_confidence: np.ndarray
    cross_modal: np.ndarray
    neighbours: np.ndarray
    atypicality: np.ndarray
    duplicates: np.ndarray
    score: np.ndarray
    rank: np.ndarray
    suggested_cluster: np.ndarray
    reasons: list[str]
    confidence: np.ndarray  # p(own cluster), the raw value behind low_confidence
    margin: np.ndarray  # own − best other (cosine in free mode, probability in trained mode)
    robust_z: np.ndarray
    duplicate_of: np.ndarray  # the most similar near-duplicate in another cluster, or −1
    audited: np.ndarray  # False for excluded (label −1) and verified samples
    image_temperature: float  # the calibrated temperature of the image view
    mode: str
    weights: dict = field(default_factory=dict)

    @property
    def order(self) -> np.ndarray:
        """Sample indices in queue order (most suspicious first)."""
        return np.argsort(self.rank, kind="stable")

    def top(self, fraction: float) -> np.ndarray:
        """Indices of the first ``fraction`` of the audited samples in queue order."""
        return self.order[: int(round(fraction * int(self.audited.sum())))]

    def to_frame(self, paths: Optional[Sequence[str]] = None):
        """A pandas DataFrame in queue order: one row per sample with its score, signals and reasons."""
        import pandas as pd

        data = {"index": np.arange(len(self.score))}
        if paths is not None:
            if len(paths) != len(self.score):
                raise InvalidInputError(f"paths has {len(paths)} entries but the audit has {len(self.score)} samples.")
            data["path"] = list(paths)
        data.update(rank=self.rank, score=self.score, label=self.labels, suggested_cluster=self.suggested_cluster,
                    reasons=self.reasons, confidence=self.confidence, margin=self.margin,
                    **{name: getattr(self, name) for name in SIGNALS}, robust_z=self.robust_z,
                    duplicate_of=self.duplicate_of)
        return pd.DataFrame(data).sort_values("rank", kind="stable").reset_index(drop=True)


def _name(c: int, names) -> str:
    try:
        return f"'{names[c]}'" if names is not None else f"cluster {c}"
    except (KeyError, IndexError):
        return f"cluster {c}"


def _check(image_embeddings, counterparts, labels):
    x, t = np.asarray(image_embeddings, np.float32), np.asarray(counterparts, np.float32)
    labels = np.asarray(labels).astype(np.int64)
    if x.ndim != 2 or t.shape != x.shape or labels.shape != (len(x),):
        raise InvalidInputError(f"image embeddings {x.shape}, counterparts {t.shape} and labels {labels.shape} "
                                "must describe the same samples (n × d, n × d, n).")
    if (labels < -1).any():
        raise InvalidInputError("labels must be cluster ids ≥ 0, or −1 for an excluded image.")
    return unit_rows_array(x), unit_rows_array(t), labels


def audit(image_embeddings, counterparts, labels, cluster_centers=None, *, probabilities=None,
          text_probabilities=None, n_neighbors: int = 10, duplicate_threshold: float = 0.98,
          weights: Optional[Mapping[str, float]] = None, verified=None,
          names: Optional[Mapping[int, str] | Sequence[str]] = None, device: str = "cpu") -> AuditResult:
    """Score every sample for how likely it is misclustered; see the module docstring for each signal.

    ``labels`` are the current cluster ids (−1: excluded, not audited). ``cluster_centers`` (K × 2d, rows for
    ids 0..K−1 in the concatenated space, as ``TAC.cluster_centers_``) default to the normalised means of the
    current clusters. Passing ``probabilities`` and ``text_probabilities`` (n × K, columns = cluster ids)
    switches to trained mode. ``verified`` (n booleans) marks images a reviewer confirmed: they still count
    as neighbours but leave the queue. ``names`` maps cluster ids to names for the reasons.
    """
    x, t, labels = _check(image_embeddings, counterparts, labels)
    n, d = x.shape
    if device == "auto":
        device = resolve_device(device)
    weights = {**DEFAULT_WEIGHTS, **(weights or {})}
    if set(weights) != set(SIGNALS) or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise InvalidInputError(f"weights must be non-negative numbers for {SIGNALS} with a positive sum.")
    if (probabilities is None) != (text_probabilities is None):
        raise InvalidInputError("trained mode needs both probabilities and text_probabilities.")
    for name, p in (("probabilities", probabilities), ("text_probabilities", text_probabilities)):
        if p is not None and (np.ndim(p) != 2 or len(p) != n):
            raise InvalidInputError(f"{name} must have one row per sample ({n}); got shape {np.shape(p)}.")
    valid = labels >= 0
    n_ids = int(labels.max()) + 1 if valid.any() else 1
    means = unit_means(x, t, labels, n_ids)
    if cluster_centers is None:
        centers = means
    else:
        centers = np.array(cluster_centers, dtype=np.float32)
        if centers.ndim != 2 or centers.shape[1] != 2 * d or len(centers) < n_ids:
            raise InvalidInputError(f"cluster_centers must have {2 * d} columns (image and text halves) and a row for "
                                    f"every cluster id up to {n_ids - 1}; got shape {centers.shape}.")
        empty_rows = np.linalg.norm(centers[:n_ids], axis=1) == 0
        centers[:n_ids][empty_rows] = means[empty_rows]  # a cluster made by an edit has no centre yet
    alive = (np.linalg.norm(centers, axis=1) > 0) & (np.bincount(labels[valid], minlength=len(centers)) > 0)
    temperature = calibrate_temperature(x, unit_rows_array(centers[:, :d]), labels, alive)
    v = centre_views(x, t, np.where(valid, labels, 0), centers, alive, probabilities, text_probabilities,
                      temperature)
    low_conf = np.clip((1 - v["confidence"]) / (1 - 1 / max(2, int(alive.sum()))), 0, 1)
    cross = np.clip(1 - v["image_own"], 0, 1)

    # neighbours (among samples with a cluster, verified ones included) and near-duplicates
    idx = np.flatnonzero(valid)
    nbr_share, dup = np.zeros(n, np.float32), np.zeros(n, np.float32)
    nbr_major, dup_of = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    nbr_major_count, nbr_other_count = np.zeros(n, np.int64), np.zeros(n, np.int64)
    k_used = 0
    if len(idx) > 1:
        every = len(idx) == n  # no excluded image: spare a copy of both arrays
        nbr, dup_idx, dup_sim = neighbour_pass(x if every else x[idx], t if every else t[idx], n_neighbors,
                                                DUPLICATE_CANDIDATES, device)
        k_used = nbr.shape[1]
        mine = labels[idx][:, None]
        if k_used:
            nl = labels[idx][nbr]
            differs = nl != mine
            nbr_other_count[idx] = differs.sum(axis=1)
            nbr_share[idx] = differs.mean(axis=1)
            nbr_major[idx], nbr_major_count[idx] = row_mode(np.where(differs, nl, -1))
        split = (dup_sim >= duplicate_threshold) & (labels[idx][dup_idx] != mine)
        has = split.any(axis=1)  # neighbours come best first: take the most similar split duplicate
        first = split[has].argmax(axis=1)
        dup_of[idx[has]] = idx[dup_idx[has, first]]
        closeness = (dup_sim[has, first] - duplicate_threshold) / max(1 - duplicate_threshold, 1e-6)
        dup[idx[has]] = 0.5 + 0.5 * np.clip(closeness, 0, 1)

    # atypicality: robust z of the distance to the own centre within each cluster
    dist = 1 - v["own_sim"]
    z = np.zeros(n, np.float32)
    for c in np.flatnonzero(alive):
        members = np.flatnonzero(labels == c)
        med = np.median(dist[members])
        mad = 1.4826 * np.median(np.abs(dist[members] - med))
        z[members] = (dist[members] - med) / (mad + 1e-6)
    atyp = np.maximum(z, 0) / (np.maximum(z, 0) + ATYPICAL_Z)

    signals = {"low_confidence": low_conf, "cross_modal": cross, "neighbours": nbr_share, "atypicality": atyp,
               "duplicates": dup}
    audited = valid.copy()
    if verified is not None:
        verified = np.asarray(verified, dtype=bool)
        if verified.shape != (n,):
            raise InvalidInputError(f"verified must have one entry per sample ({n}); got shape {verified.shape}.")
        audited &= ~verified
    pooled = sum(weights[s] * logit(signals[s]) for s in SIGNALS) / sum(weights.values())
    score = np.where(audited, 1 / (1 + np.exp(-pooled)), 0).astype(np.float32)
    rank = np.empty(n, np.int64)
    rank[np.lexsort((np.arange(n), -score, ~audited))] = np.arange(n)

    # the suggested alternative: a weighted vote of four candidates; argmax ties go to the first (the model's)
    second, img_view, txt_view = v["second"], v["image_view"], v["text_view"]
    cand = np.stack([second, nbr_major, np.where(img_view != labels, img_view, -1),
                     np.where(dup_of >= 0, labels[dup_of], -1)], axis=1)
    vote = np.stack([np.full(n, _VOTE_MODEL), _VOTE_NEIGHBOURS * nbr_major_count / max(k_used, 1),
                     np.full(n, _VOTE_IMAGE), np.full(n, _VOTE_DUPLICATE)], axis=1) * (cand >= 0)
    total = (vote[:, None, :] * (cand[:, :, None] == cand[:, None, :])).sum(axis=2)
    suggested = np.where(audited, cand[np.arange(n), total.argmax(axis=1)], -1)
    reasons = ["excluded" if not valid[i] else "verified" for i in range(n)]
    for i in np.flatnonzero(audited).tolist():
        phrases = [(low_conf[i], weights["low_confidence"] * low_conf[i],  # (value, contribution, phrase)
                    f"low confidence ({v['confidence'][i]:.2f})")]
        if nbr_major[i] >= 0:
            rest = nbr_other_count[i] - nbr_major_count[i]
            phrases.append((nbr_share[i], weights["neighbours"] * nbr_share[i],
                            f"{nbr_major_count[i]} of {k_used} neighbours in {_name(nbr_major[i], names)}"
                            + (f" ({rest} more elsewhere)" if rest else "")))
        if img_view[i] == labels[i]:
            text = f"image view unsure of this cluster ({v['image_own'][i]:.2f})"
        elif txt_view[i] == img_view[i]:
            text = f"image and text views both point to {_name(img_view[i], names)}"
        else:
            text = (f"image and text views disagree (image: {_name(img_view[i], names)}, "
                    f"text: {_name(txt_view[i], names)})")
        phrases.append((cross[i], weights["cross_modal"] * cross[i], text))
        phrases.append((atyp[i], weights["atypicality"] * atyp[i],
                        f"far from its cluster's centre (robust z {z[i]:.1f})"))
        if dup_of[i] >= 0:
            phrases.append((dup[i], weights["duplicates"] * dup[i] + 1, f"near-duplicate of image {dup_of[i]} "
                            f"in {_name(labels[dup_of[i]], names)} (cosine {float(x[i] @ x[dup_of[i]]):.3f})"))
        phrases.sort(key=lambda item: -item[1])
        shown = [p for value, _, p in phrases if value >= REASON_MIN] or [p for value, _, p in phrases[:1] if value]
        reasons[i] = "; ".join(shown) if shown else "no warning sign"

    for key in ("confidence", "margin"):
        v[key][~valid] = 0
    return AuditResult(labels=labels, **{s: signals[s].astype(np.float32) for s in SIGNALS}, score=score, rank=rank,
                       suggested_cluster=suggested, reasons=reasons, confidence=v["confidence"],
                       margin=v["margin"], robust_z=z, duplicate_of=dup_of, audited=audited,
                       image_temperature=temperature, mode="free" if probabilities is None else "trained",
                       weights=dict(weights))


def audit_tac(model, image_embeddings, labels=None, **kwargs) -> AuditResult:
    """:func:`audit` for a fitted :class:`~tac_core.cluster.tac.TAC` (its counterparts, centres and, in trained mode,
    head probabilities). With edited ``labels`` the centres are recomputed from those labels."""
    edited = labels is not None
    labels = model.labels_ if labels is None else labels
    if getattr(model, "mode", "free") == "trained":
        kwargs.setdefault("probabilities", model.probabilities_)
        kwargs.setdefault("text_probabilities", model.text_probabilities_)
    centers = None if edited else model.cluster_centers_
    return audit(image_embeddings, model.counterparts_, labels, centers, **kwargs)
