"""Spherical k-means at scale: batched k-means++ seeding, seeding from a sample, and the two ways of summing
centres, each against what it replaces. (Recovery, determinism and cancelling: tests/test_tac.py.)"""
from __future__ import annotations

import numpy as np
import torch

from tac_core.cluster import kmeans
from tac_core.cluster.kmeans import kmeans_plusplus, spherical_kmeans


def test_batched_seeding_draws_what_one_restart_at_a_time_would(clip_like_points):
    x = torch.as_tensor(clip_like_points)
    rng = np.random.default_rng(11)
    one_by_one = torch.cat([kmeans_plusplus(x, 12, rng, 1) for _ in range(4)])
    together = kmeans_plusplus(x, 12, np.random.default_rng(11), 4)
    torch.testing.assert_close(together, one_by_one, rtol=0, atol=0)
    assert torch.equal(kmeans_plusplus(x, 12, np.random.default_rng(11), 4), together)


def test_fewer_distinct_points_than_centres_give_finite_centres(clip_like_points):
    repeated = np.repeat(clip_like_points[:3], 5, axis=0)  # 3 distinct points, 6 centres: seeding runs out of weight
    result = spherical_kmeans(repeated, 6, n_init=2, random_state=0)
    assert np.isfinite(result.centers).all() and set(result.labels) <= set(range(6))
    assert result.objective > 1 - 1e-5  # every point sits on a centre


def test_seeding_from_a_sample_keeps_the_objective_and_determinism(clip_like_points, monkeypatch):
    full = spherical_kmeans(clip_like_points, 30, n_init=2, random_state=4)
    monkeypatch.setattr(kmeans, "SEED_MIN_POINTS", 500)
    monkeypatch.setattr(kmeans, "SEED_POINTS_PER_CLUSTER", 8)  # seeds from 500 of the 3,000 points
    sampled = spherical_kmeans(clip_like_points, 30, n_init=2, random_state=4)
    again = spherical_kmeans(clip_like_points, 30, n_init=2, random_state=4)
    np.testing.assert_array_equal(sampled.labels, again.labels)
    assert sampled.objective > full.objective - 0.005


def test_scatter_and_one_hot_centre_sums_give_the_same_clustering(clip_like_points, monkeypatch):
    monkeypatch.setattr(kmeans, "SCATTER_MIN_CLUSTERS", 1)  # every restart sums with a scatter-add
    scatter = spherical_kmeans(clip_like_points, 40, n_init=3, random_state=2)
    monkeypatch.setattr(kmeans, "SCATTER_MIN_CLUSTERS", 10**9)  # every restart sums with a one-hot product
    one_hot = spherical_kmeans(clip_like_points, 40, n_init=3, random_state=2)
    np.testing.assert_array_equal(scatter.labels, one_hot.labels)
    np.testing.assert_allclose(scatter.centers, one_hot.centers, atol=1e-5)
    assert scatter.n_iter == one_hot.n_iter > 1
