"""The audit's neighbour pass: in bounded blocks it equals brute force, and above the approximate-search
threshold it switches to the approximate search without losing recall. (The signals: tests/test_audit.py.)"""
from __future__ import annotations

import numpy as np

from tac_core.cluster import audit_signals, neighbors
from tac_core.cluster.audit import audit
from tac_core.cluster.audit_signals import neighbour_pass
from tac_core.cluster.neighbors import recall_at_k
from tac_core.cluster.synthetic import make_clip_like_bed


def unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def test_neighbour_blocks_match_brute_force(monkeypatch):
    rng = np.random.default_rng(4)
    x, t = unit(rng.normal(size=(200, 16))), unit(rng.normal(size=(200, 16)))
    monkeypatch.setattr(audit_signals, "BLOCK_ELEMENTS", 200 * 16)  # 16-row blocks
    nbr, dup_idx, dup_sim = neighbour_pass(x, t, 7, 3, "cpu")
    both = (x @ x.T + t @ t.T) / 2
    np.fill_diagonal(both, -np.inf)
    np.testing.assert_array_equal(np.sort(nbr, 1), np.sort(np.argsort(-both, 1)[:, :7], 1))
    sx = x @ x.T
    np.fill_diagonal(sx, -np.inf)
    np.testing.assert_allclose(dup_sim, -np.sort(-sx, 1)[:, :3], atol=1e-5)


def test_audit_switches_to_the_approximate_search_above_the_threshold(clip_like_points, monkeypatch):
    points = clip_like_points
    rng = np.random.default_rng(0)
    t = make_clip_like_bed(n_samples=3000, n_classes=10, dim=64, n_distractor_nouns=10, random_state=8).image_embeddings
    labels = rng.integers(0, 5, len(points))
    exact = neighbour_pass(points, t, 10, 5, "cpu")
    monkeypatch.setattr(neighbors, "APPROX_MIN_ROWS", 1000)
    calls = []
    original = neighbors.approximate_knn
    monkeypatch.setattr(audit_signals, "approximate_knn", lambda *a, **kw: calls.append(a[1]) or original(*a, **kw))
    approx = neighbour_pass(points, t, 10, 5, "cpu")
    assert calls == [10, 5]
    both = np.concatenate([points, t], axis=1) / np.sqrt(2)
    true_both = np.take_along_axis(both @ both.T, exact[0], axis=1)
    found_both = np.einsum("nd,nkd->nk", both, both[approx[0]])
    assert recall_at_k(found_both, true_both) >= 0.95
    assert recall_at_k(approx[2], exact[2]) >= 0.95
    result = audit(points, t, labels)
    assert result.score.shape == (len(points),) and np.isfinite(result.score).all()
