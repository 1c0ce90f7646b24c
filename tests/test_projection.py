"""The 2-D map: PCA then UMAP, reproducible, placing new images on the existing map, saved and reloaded.

UMAP's numba compile costs 10-30 s once per process, so the UMAP fits here are few and small, share a
module-scoped fixture and are marked slow; what does not depend on UMAP is checked on the linear map.
"""
import numpy as np
import pytest
from sklearn.decomposition import PCA

from tac_core.errors import InvalidInputError
from tac_core.cluster.projection import Projection, fit_projection, linear_projection, quick_layout
from tac_core.cluster.synthetic import make_clip_like_bed


@pytest.fixture(scope="module")
def features():
    bed = make_clip_like_bed(n_samples=300, n_classes=4, dim=128, n_distractor_nouns=10, random_state=0)
    return bed.image_embeddings


@pytest.fixture(scope="module")
def fit_events():
    return []


@pytest.fixture(scope="module")
def projection(features, fit_events):
    return fit_projection(features, random_state=0, progress=lambda *event: fit_events.append(event))


@pytest.mark.slow
def test_map_has_one_point_per_image_after_a_pca_step(projection, fit_events):
    assert projection.coordinates.shape == (300, 2)
    assert projection.coordinates.dtype == np.float32
    assert np.isfinite(projection.coordinates).all()
    assert projection.pca_.n_components_ == 50
    assert projection.pca_.n_features_in_ == 128
    assert projection.umap_.n_neighbors == 15
    assert fit_events[0] == ("projecting", 0, 2) and fit_events[-1] == ("projecting", 2, 2)


@pytest.mark.slow
def test_same_seed_same_map_and_no_pca_for_small_features():
    rng = np.random.default_rng(1)
    small = rng.normal(size=(60, 16)).astype(np.float32)
    first = fit_projection(small, random_state=7)
    again = fit_projection(small, random_state=7)
    np.testing.assert_array_equal(first.coordinates, again.coordinates)
    assert first.pca_ is None  # 16 dimensions are already fewer than pca_dims


@pytest.mark.slow
def test_new_images_land_next_to_their_duplicates(projection, features):
    placed = projection.transform(features[:5])
    extent = np.ptp(projection.coordinates, axis=0).max()
    distance = np.linalg.norm(placed - projection.coordinates[:5], axis=1)
    assert (distance < 0.05 * extent).all(), distance / extent


@pytest.mark.slow
def test_save_and_load_round_trip(projection, features, tmp_path):
    projection.save(tmp_path / "map")
    assert sorted(p.name for p in (tmp_path / "map").iterdir()) == ["coordinates.npy", "projection.joblib"]
    loaded = Projection.load(tmp_path / "map")
    np.testing.assert_array_equal(loaded.coordinates, projection.coordinates)
    assert loaded.params == projection.params
    np.testing.assert_allclose(loaded.transform(features[:3]), projection.transform(features[:3]))


def test_missing_or_damaged_saves_are_explained(features, tmp_path):
    projection = linear_projection(features)
    with pytest.raises(InvalidInputError, match="no saved map"):
        Projection.load(tmp_path / "nothing")
    projection.save(tmp_path / "map")
    (tmp_path / "map" / "projection.joblib").write_bytes(b"not a pickle")
    with pytest.raises(InvalidInputError, match="cannot be read"):
        Projection.load(tmp_path / "map")

    projection.save(tmp_path / "map")
    np.save(tmp_path / "map" / "coordinates.npy", projection.coordinates[::-1])  # as if a save was interrupted
    with pytest.raises(InvalidInputError, match="does not match"):
        Projection.load(tmp_path / "map")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_fewer_than_four_images_get_a_linear_layout(n, tmp_path):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 32)).astype(np.float32)
    fitted = fit_projection(x)
    assert fitted.coordinates.shape == (n, 2) and np.isfinite(fitted.coordinates).all()
    assert fitted.umap_ is None
    np.testing.assert_array_equal(fitted.coordinates, fit_projection(x).coordinates)
    np.testing.assert_allclose(fitted.transform(x), fitted.coordinates, atol=1e-6)
    fitted.save(tmp_path)
    np.testing.assert_array_equal(Projection.load(tmp_path).coordinates, fitted.coordinates)


@pytest.mark.slow
def test_few_images_lower_the_number_of_neighbours():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 8)).astype(np.float32)
    fitted = fit_projection(x, n_neighbors=15)
    assert fitted.params["n_neighbors"] == 5
    assert fitted.coordinates.shape == (6, 2) and np.isfinite(fitted.coordinates).all()


def test_quick_layout_is_the_first_two_principal_components(features):
    layout = quick_layout(features)
    reference = PCA(n_components=2).fit_transform(features)
    assert layout.shape == (300, 2) and layout.dtype == np.float32
    np.testing.assert_allclose(np.abs(layout), np.abs(reference), atol=1e-4)
    np.testing.assert_array_equal(layout, quick_layout(features.copy()))
    assert quick_layout(features[:1]).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("kwargs, message", [
    ({"features": np.zeros(5)}, "2-D array"),
    ({"features": np.full((5, 3), np.nan)}, "NaN"),
    ({"pca_dims": 1}, "pca_dims"),
    ({"n_neighbors": 1}, "n_neighbors"),
    ({"min_dist": -0.5}, "min_dist"),
    ({"metric": "hamming"}, "metric must be one of"),
])
def test_bad_input_is_explained(kwargs, message):
    kwargs = {"features": np.ones((5, 3)), **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        fit_projection(**kwargs)


def test_new_features_from_another_model_are_explained(features):
    with pytest.raises(InvalidInputError, match="same model"):
        linear_projection(features).transform(np.ones((2, 64), dtype=np.float32))
