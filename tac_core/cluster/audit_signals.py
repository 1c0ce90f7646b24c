"""The computations behind the audit's signals (:mod:`tac_core.cluster.audit`): neighbours in both spaces in
bounded blocks, the image view's temperature calibrated without labels, and each sample's view of the centres.

Nothing here is n × n: neighbours come from row blocks of at most :data:`BLOCK_ELEMENTS` similarities (or the
approximate index of :mod:`tac_core.cluster.neighbors`), centre similarities from row chunks.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import InvalidInputError
from ..numerics import unit_rows_array
from .neighbors import approximate_knn, use_approximate

BLOCK_ELEMENTS = 1 << 25
CHUNK_ROWS = 8192
CALIBRATION_ROWS = 20_000
POOL_CLIP = 0.01  # signals are clipped to [POOL_CLIP, 1 − POOL_CLIP] before the log-odds pool
TEMPERATURE = 0.05  # free-mode confidence, as TAC's own


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def neighbour_pass(x: np.ndarray, t: np.ndarray, k: int, m: int, device) -> tuple:
    """Top-k neighbours in the concatenated space and top-m in image space, excluding self, in row blocks.

    The concatenated cosine of unit [x, t]/√2 rows is (x·x' + t·t') / 2, so both come from the same two
    products; a block holds at most ``BLOCK_ELEMENTS`` similarities per space. Above
    :data:`tac_core.cluster.neighbors.APPROX_MIN_ROWS` samples on the CPU both searches use the approximate index of
    :mod:`tac_core.cluster.neighbors` instead (recall ≥ 0.95; near-duplicates share a list, so they are found).
    """
    n = len(x)
    k, m = min(k, n - 1), min(m, n - 1)
    if use_approximate(n, device):
        both = np.concatenate([x, t], axis=1) * np.float32(np.sqrt(0.5))  # unit rows: same order as x·x' + t·t'
        nbr = approximate_knn(both, k, device=device)[0] if k else np.empty((n, 0), np.int64)
        del both
        dup_idx, dup_sim, _ = approximate_knn(x, m, device=device) if m else (
            np.empty((n, 0), np.int64), np.empty((n, 0), np.float32), None)
        return nbr, dup_idx, dup_sim
    xs, ts = torch.as_tensor(x, device=device), torch.as_tensor(t, device=device)
    nbr, dup_idx, dup_sim = np.empty((n, k), np.int64), np.empty((n, m), np.int64), np.empty((n, m), np.float32)
    rows = max(16, min(4096, BLOCK_ELEMENTS // max(1, n)))
    for start in range(0, n, rows):
        sx = xs[start:start + rows] @ xs.T
        r = torch.arange(sx.shape[0], device=sx.device)
        sx[r, r + start] = -torch.inf
        if k:  # x·x' + t·t' in one fused product-and-add (the order is that of the cosine, twice it)
            both = torch.addmm(sx, ts[start:start + rows], ts.T)
            nbr[start:start + len(r)] = both.topk(k, dim=1).indices.cpu().numpy()
            del both
        if m:
            top = sx.topk(m, dim=1)
            dup_idx[start:start + len(r)] = top.indices.cpu().numpy()
            dup_sim[start:start + len(r)] = top.values.cpu().numpy()
    return nbr, dup_idx, dup_sim


def unit_means(x: np.ndarray, t: np.ndarray, labels: np.ndarray, n_ids: int) -> np.ndarray:
    """(n_ids, 2d) normalised mean of [x, t] per cluster, summed in row chunks (float64), zero when empty."""
    sums = np.zeros((n_ids, 2 * x.shape[1]), np.float64)
    for start in range(0, len(x), CHUNK_ROWS):
        sl = slice(start, start + CHUNK_ROWS)
        keep = labels[sl] >= 0
        np.add.at(sums, labels[sl][keep], np.concatenate([x[sl], t[sl]], axis=1)[keep].astype(np.float64))
    return unit_rows_array(sums)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, POOL_CLIP, 1 - POOL_CLIP)
    return np.log(p / (1 - p))


def calibrate_temperature(x: np.ndarray, c_img: np.ndarray, labels: np.ndarray, alive: np.ndarray) -> float:
    """Temperature at which the image view's mean top probability equals its agreement with the labels
    (bisection in log space over [0.001, 1], on at most ``CALIBRATION_ROWS`` labelled rows, fixed seed)."""
    pick = np.flatnonzero(labels >= 0)
    if len(pick) == 0:
        return TEMPERATURE
    if len(pick) > CALIBRATION_ROWS:
        pick = np.sort(np.random.default_rng(0).choice(pick, CALIBRATION_ROWS, replace=False))
    sims = x[pick] @ c_img.T + np.where(alive, 0.0, -np.inf).astype(np.float32)
    agreement = float((sims.argmax(axis=1) == labels[pick]).mean())
    lo, hi = np.log(1e-3), 0.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if softmax(sims / np.exp(mid)).max(axis=1).mean() > agreement:
            lo = mid  # too sure: warm up
        else:
            hi = mid
    return float(np.exp((lo + hi) / 2))


def centre_views(x, t, own, centers, alive, probabilities, text_probabilities, temperature) -> dict:
    """Per-sample quantities that need the sample's similarity to every centre, in row chunks (n × K never
    held for 200k samples and many clusters): own-centre cosine, confidence and margin, the model's second
    choice, and the image / text views (p(own) of the image view, each view's cluster)."""
    n, d = x.shape
    trained = probabilities is not None
    c_all = unit_rows_array(centers)
    c_img, c_txt = unit_rows_array(centers[:, :d]), unit_rows_array(centers[:, d:])
    out = {key: np.empty(n, np.float32) for key in ("own_sim", "confidence", "margin", "image_own")}
    out.update({key: np.empty(n, np.int64) for key in ("second", "image_view", "text_view")})
    dead = np.where(alive, 0.0, -np.inf).astype(np.float32)
    for start in range(0, n, CHUNK_ROWS):
        sl = slice(start, start + CHUNK_ROWS)
        rows, own_c = np.arange(len(x[sl])), own[sl]
        sims = np.concatenate([x[sl], t[sl]], axis=1) @ c_all.T / np.sqrt(2) + dead
        out["own_sim"][sl] = sims[rows, own_c]
        image_view = softmax(x[sl] @ c_img.T / temperature + dead)
        out["image_own"][sl] = image_view[rows, own_c]
        out["image_view"][sl] = image_view.argmax(axis=1)
        if trained:
            p = pad_columns(probabilities[sl], len(rows), len(centers))
            out["text_view"][sl] = pad_columns(text_probabilities[sl], len(rows), len(centers)).argmax(axis=1)
        else:
            p = softmax(sims / TEMPERATURE)
            out["text_view"][sl] = (t[sl] @ c_txt.T + dead).argmax(axis=1)
        out["confidence"][sl] = p[rows, own_c]
        source = p if trained else sims
        other = source.copy()
        other[rows, own_c] = -np.inf
        out["second"][sl] = other.argmax(axis=1)
        out["margin"][sl] = source[rows, own_c] - other.max(axis=1)
    return out


def pad_columns(p, n: int, n_k: int) -> np.ndarray:
    """Probabilities with one column per cluster id; ids the heads never saw (new after a split) get 0."""
    p = np.asarray(p, dtype=np.float32)
    if p.ndim != 2 or p.shape[0] != n:
        raise InvalidInputError(f"probabilities must have one row per sample ({n}); got shape {p.shape}.")
    if p.shape[1] >= n_k:
        return p[:, :n_k]
    return np.concatenate([p, np.zeros((n, n_k - p.shape[1]), np.float32)], axis=1)


def row_mode(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the most frequent value ≥ 0 and its count (−1, 0 for a row of only −1); ties: smallest value."""
    s = np.sort(a, axis=1)
    n, k = s.shape
    best = np.full(n, -1, np.int64)
    best_count = np.zeros(n, np.int64)
    run = np.ones(n, np.int64)
    for j in range(k):
        if j > 0:
            run = np.where(s[:, j] == s[:, j - 1], run + 1, 1)
        better = (s[:, j] >= 0) & (run > best_count)
        best = np.where(better, s[:, j], best)
        best_count = np.where(better, run, best_count)
    return best, best_count
