"""A 2-way split of rows (k-means, k = 2): planted groups separated, the larger half first, ties by the order
key, and rows that cannot be split refused. (The Review page's split of a cluster: tests/test_auto_split.py.)"""
from __future__ import annotations

import numpy as np
import pytest

from tac_core.cluster.subcluster import two_way_labels
from tac_core.errors import InvalidInputError


def two_groups(n_a: int, n_b: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows around two orthogonal directions, shuffled; each row's group."""
    rng = np.random.default_rng(seed)
    group = rng.permutation(np.r_[np.zeros(n_a, int), np.ones(n_b, int)])
    return (np.eye(8)[group] + 0.15 * rng.standard_normal((len(group), 8))).astype(np.float32), group


def test_two_way_labels_separate_planted_groups_larger_half_first():
    features, group = two_groups(30, 12)
    labels, objective = two_way_labels(features)
    assert set(labels[group == 0]) == {0} and set(labels[group == 1]) == {1}  # the larger group is half 0
    assert 0 < objective <= 1
    again, _ = two_way_labels(features)
    np.testing.assert_array_equal(again, labels)


def test_equal_halves_keep_the_half_with_the_smallest_order_key():
    features, group = two_groups(10, 10, seed=2)
    labels, _ = two_way_labels(features)
    assert labels[0] == 0  # by default the half holding row 0 stays
    other = int(np.flatnonzero(labels == 1)[0])
    key = np.arange(len(group))
    key[other] = -1  # now a row of the other half has the smallest key
    flipped, _ = two_way_labels(features, order_key=key)
    assert flipped[other] == 0 and (flipped == 1 - labels).all()


def test_rows_that_cannot_be_split_are_refused():
    with pytest.raises(InvalidInputError, match="at least 2"):
        two_way_labels(np.ones((1, 3)))
    with pytest.raises(InvalidInputError, match="too alike"):
        two_way_labels(np.ones((5, 3)))
    with pytest.raises(InvalidInputError, match="NaN"):
        two_way_labels(np.r_[np.ones((2, 3)), [[np.nan, 0, 0]]])
