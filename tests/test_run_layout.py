"""A run's 2-D map for the Review page (``tac_core.workspace.run_layout``): which rows it maps, the stand-ins
while it is missing, and a computed map saved with the run."""
from __future__ import annotations

import numpy as np

import tac_core.cluster.projection
from review_workspace import synthetic_workspace
from tac_core.workspace.run_layout import (LAYOUT_ARRAY, compute_layout, layout_features, placeholder_layout,
                                           preview_layout, saved_layout_name)


def test_layout_features_are_image_and_text_rows_when_both_were_saved():
    x, t = np.ones((5, 3), np.float32), np.zeros((5, 2), np.float32)
    assert layout_features(x, t, 5).shape == (5, 5)
    assert layout_features(x, None, 5) is x and layout_features(x, t[:4], 5) is x
    assert layout_features(None, t, 5) is None and layout_features(x[:4], t, 5) is None


def test_stand_ins_and_names():
    assert np.array_equal(placeholder_layout(3, 10), placeholder_layout(3, 10))  # stable across reruns
    assert not np.array_equal(placeholder_layout(3, 10), placeholder_layout(4, 10))
    features = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    assert preview_layout(features).shape == (20, 2)
    assert saved_layout_name({"projection": "pca"}) == "PCA picture"
    assert saved_layout_name({"projection": "umap"}) == saved_layout_name({}) == "UMAP map"


def test_a_computed_map_is_saved_with_the_run(tmp_path, monkeypatch):
    workspace, run_id = synthetic_workspace(tmp_path, 40, 3)
    seen = []

    class Fitted:
        def __init__(self, features):
            self.coordinates = features[:, :2] * 2

    def fake_fit(features, **kwargs):  # stands in for UMAP (seconds of numba compilation)
        seen.append(features.shape)
        return Fitted(features)

    monkeypatch.setattr(tac_core.cluster.projection, "fit_projection", fake_fit)
    features = np.arange(40 * 4, dtype=np.float64).reshape(40, 4)
    xy = compute_layout(workspace, run_id, features)
    assert seen == [(40, 4)] and xy.dtype == np.float32
    assert np.array_equal(workspace.load_run_array(run_id, LAYOUT_ARRAY), features[:, :2] * 2)
    workspace.close()

