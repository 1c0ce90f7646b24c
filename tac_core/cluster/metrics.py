"""Clustering quality against ground truth: ACC (best one-to-one cluster→class map), NMI, ARI, and the
macro-averaged per-class recall under the same map (a rare class counts as much as a dominant one)."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from ..errors import InvalidInputError


def _check(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise InvalidInputError(f"labels must be two 1-D arrays of equal length; got {y_true.shape} and {y_pred.shape}.")
    return y_true, y_pred


def _best_map(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cluster × class count table and the Hungarian one-to-one map that keeps most samples."""
    _, true_idx = np.unique(y_true, return_inverse=True)
    _, pred_idx = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((pred_idx.max() + 1, true_idx.max() + 1), dtype=np.int64)
    np.add.at(counts, (pred_idx, true_idx), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return counts, rows, cols


def clustering_accuracy(y_true, y_pred) -> float:
    """Share of samples correct under the best one-to-one map of clusters to classes (Hungarian)."""
    y_true, y_pred = _check(y_true, y_pred)
    if y_true.size == 0:
        return 0.0
    counts, rows, cols = _best_map(y_true, y_pred)
    return float(counts[rows, cols].sum() / y_true.size)


def class_recalls(y_true, y_pred) -> np.ndarray:
    """Per class (sorted class values), the share of its samples in the cluster the ACC map gives it; a class
    left without a cluster (more classes than clusters) scores 0."""
    y_true, y_pred = _check(y_true, y_pred)
    if y_true.size == 0:
        return np.zeros(0)
    counts, rows, cols = _best_map(y_true, y_pred)
    recalls = np.zeros(counts.shape[1])
    recalls[cols] = counts[rows, cols] / counts.sum(axis=0)[cols]
    return recalls


def macro_recall(y_true, y_pred) -> float:
    """Mean of :func:`class_recalls`: a rare class weighs as much as the dominant one."""
    recalls = class_recalls(y_true, y_pred)
    return float(recalls.mean()) if recalls.size else 0.0


def evaluate(y_true, y_pred) -> dict[str, float]:
    """ACC, NMI and ARI in percent, the way the TAC paper reports them."""
    y_true, y_pred = _check(y_true, y_pred)
    return {
        "ACC": 100.0 * clustering_accuracy(y_true, y_pred),
        "NMI": 100.0 * float(normalized_mutual_info_score(y_true, y_pred)),
        "ARI": 100.0 * float(adjusted_rand_score(y_true, y_pred)),
    }
