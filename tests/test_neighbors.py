"""Cosine neighbours at scale, on a small bed: exact search in bounded blocks equals brute force; the
approximate search reaches its recall, is repeatable, and takes over above its threshold. Speed is measured
in ``bench/perf.py``, never asserted here."""
from __future__ import annotations

import numpy as np

from tac_core.cluster import neighbors
from tac_core.cluster.neighbors import approximate_knn, block_rows, cosine_knn, exact_knn, recall_at_k


def brute_force(x, k):
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def test_blocks_stay_bounded_at_any_size():
    for n in (10, 5_000, 200_000, 1_000_000):
        rows = block_rows(n)
        assert 16 <= rows <= neighbors.MAX_BLOCK_ROWS
        assert rows * n <= max(neighbors.BLOCK_ELEMENTS, 16 * n)
    assert block_rows(200_000) * 200_000 * 4 <= 128 * 2**20  # a block of similarities: at most 128 MB


def test_exact_search_in_small_blocks_equals_brute_force(clip_like_points, monkeypatch):
    monkeypatch.setattr(neighbors, "BLOCK_ELEMENTS", 50_000)  # 16 rows a block for 3,000 points
    x = clip_like_points[:700]
    indices, sims = exact_knn(x, 5)
    expected_idx, expected_sims = brute_force(x, 5)
    np.testing.assert_allclose(sims, expected_sims, atol=1e-5)
    assert (indices == expected_idx).mean() > 0.99  # ties may come in another order
    assert not (indices == np.arange(700)[:, None]).any()
    rows = np.array([3, 699, 0])
    part_idx, part_sims = exact_knn(x, 5, rows=rows)
    np.testing.assert_array_equal(part_idx, indices[rows])


def test_approximate_search_reaches_the_recall_and_is_repeatable(clip_like_points, monkeypatch):
    points = clip_like_points
    monkeypatch.setattr(neighbors, "APPROX_MIN_ROWS", 1000)  # the 3,000-point bed takes the approximate path
    assert neighbors.use_approximate(len(points), "cpu")
    assert not neighbors.use_approximate(len(points), "cpu", method="exact")
    indices, sims = cosine_knn(points, 20)
    _, true_sims = brute_force(points, 20)
    assert recall_at_k(sims, true_sims) >= 0.95
    assert not (indices == np.arange(len(points))[:, None]).any()  # never its own neighbour
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # best first
    np.testing.assert_allclose(sims, np.einsum("nd,nkd->nk", points, points[indices]), atol=1e-5)  # exact values
    again, _ = cosine_knn(points, 20)
    np.testing.assert_array_equal(indices, again)

    _, _, info = approximate_knn(points, 20)
    assert info.method == "approximate" and info.nlist == round(4 * np.sqrt(len(points)))
    assert info.recall >= 0.95 and info.sample == neighbors.RECALL_SAMPLE and info.nprobe >= neighbors.NPROBE_START


def test_approximate_search_handles_duplicates_tiny_lists_and_a_forced_nprobe(clip_like_points):
    points = clip_like_points
    x = np.concatenate([points[:400], points[:400]])  # every point has an exact copy
    indices, sims, info = approximate_knn(x, 3, nlist=60, nprobe=1)
    assert info.nprobe == 1 and (indices >= 0).all()
    copy_of = np.concatenate([np.arange(400, 800), np.arange(400)])
    assert (indices[:, 0] == copy_of).mean() > 0.99  # the copy is the nearest neighbour
    assert not (indices == np.arange(800)[:, None]).any()
    k_all, _, _ = approximate_knn(points[:30], 50)  # k larger than the collection: clipped
    assert k_all.shape == (30, 29)
