"""Numeric helpers shared by the clustering steps: chunked cluster means, and unit rows used as they are."""
from __future__ import annotations

import numpy as np
import torch

from tac_core import numerics


def test_cluster_means_in_chunks_equal_one_pass(clip_like_points, monkeypatch):
    labels = np.random.default_rng(3).integers(0, 7, len(clip_like_points))
    whole = numerics.cluster_unit_means(clip_like_points, labels, 8)
    monkeypatch.setattr(numerics, "CHUNK_ROWS", 97)
    chunked = numerics.cluster_unit_means(clip_like_points, labels, 8)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    assert (chunked[7] == 0).all()  # the empty cluster


def test_unit_rows_are_used_as_they_are():
    x = torch.nn.functional.normalize(torch.randn(50, 8), dim=1)
    assert numerics.unit_rows(x) is x
    y = 3 * x
    torch.testing.assert_close(numerics.unit_rows(y), x)
