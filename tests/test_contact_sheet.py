"""Contact sheets: a cluster's typical members, the ones nearest another centre, and the farthest ones."""
from __future__ import annotations

import numpy as np
import pytest

from tac_core.cluster.contact_sheet import contact_sheet
from tac_core.errors import InvalidInputError

D = 16


def unit(a):
    a = np.asarray(a, dtype=np.float32)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def test_contact_sheet_picks_typical_boundary_and_far_members():
    rng = np.random.default_rng(0)
    dirs = np.eye(D)[:3]
    labels = np.repeat(np.arange(3), 30)
    features = unit(dirs[labels] + 0.5 * rng.normal(size=(90, D)) / np.sqrt(D))
    centers = unit(np.stack([features[labels == c].mean(0) for c in range(3)]))
    features[2] = unit(dirs[0] + 0.8 * dirs[1])  # leans towards cluster 1
    features[4] = unit(dirs[0] + 0.9 * np.eye(D)[9])  # far out, towards no cluster
    sheet = contact_sheet(labels, 0, features, centers, n=3)
    assert sheet.typical[0] == np.argmax(features[:30] @ centers[0])
    assert sheet.boundary[0] == 2
    assert 4 in sheet.farthest[:2]
    shown = np.concatenate([sheet.typical, sheet.boundary, sheet.farthest])
    assert len(set(shown.tolist())) == len(shown) == 9 and (labels[shown] == 0).all()
    assert len(contact_sheet(labels[:5], 0, features[:5], centers, n=8).typical) == 5  # fewer members than n
    assert contact_sheet(labels, 0, features, np.vstack([centers, np.zeros(D)]), n=3).boundary[0] == 2


def test_an_empty_cluster_gets_an_empty_sheet_and_bad_input_is_explained():
    features = unit(np.eye(4)[[0, 0, 1, 1]] + 0.1)
    centers = unit(np.eye(4)[:3] + 0.1)
    sheet = contact_sheet([0, 0, 1, 1], 2, features, centers)
    assert sheet.typical.size == sheet.boundary.size == sheet.farthest.size == 0
    with pytest.raises(InvalidInputError, match="has no centre"):
        contact_sheet([0, 0, 1, 1], 7, features, centers)
    with pytest.raises(InvalidInputError, match="same columns"):
        contact_sheet([0, 0, 1, 1], 0, features, centers[:, :3])
