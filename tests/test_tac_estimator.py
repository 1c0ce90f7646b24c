"""TAC keeps scikit-learn's estimator contract, checked in the spirit of ``sklearn.utils.estimator_checks``:
parameters round-trip through ``get_params`` / ``set_params`` and ``clone``; a seed fixes the result; bad input
is refused before anything changes; fitted attributes exist only after ``fit``, which returns the estimator,
and a refit replaces all of them. (``check_estimator`` itself cannot run: ``fit`` takes a vocabulary, not y.)"""
from __future__ import annotations

import inspect
import pickle

import numpy as np
import pytest
from sklearn.base import clone

from tac_core.cluster.synthetic import make_clip_like_bed
from tac_core.cluster.tac import TAC
from tac_core.errors import EmptyInputError, InvalidInputError

FAST = {"free": {}, "trained": {"epochs": 1, "batch_size": 32, "n_neighbors": 5}}  # a tiny trained run
FREE_ONLY = ("margin_", "objective_", "n_iter_")
TRAINED_ONLY = ("probabilities_", "text_probabilities_", "text_labels_", "heads_")


@pytest.fixture(scope="module")
def bed():
    return make_clip_like_bed(n_samples=90, n_classes=3, dim=16, n_distractor_nouns=30, random_state=2)


@pytest.fixture(scope="module")
def other_bed():
    return make_clip_like_bed(n_samples=60, n_classes=4, dim=16, n_distractor_nouns=20, random_state=9)


@pytest.fixture(scope="module")
def fitted(bed):
    """One fit per mode, for the tests that only read it."""
    return {mode: TAC(bed.n_classes, mode=mode, random_state=11, **FAST[mode]).fit(bed.image_embeddings,
                                                                                  bed.vocab_embeddings)
            for mode in FAST}


def fitted_names(model: TAC) -> set[str]:
    return {name for name in vars(model) if name.endswith("_") and not name.startswith("_")}


def assert_same_fit(a: TAC, b: TAC) -> None:
    assert fitted_names(a) == fitted_names(b)
    for name in fitted_names(a) - {"timings_"}:
        if name == "heads_":
            for head in ("image", "text"):
                for key, tensor in a.heads_[head].items():
                    assert tensor.equal(b.heads_[head][key]), (head, key)
        elif isinstance(getattr(a, name), np.ndarray):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        else:
            assert getattr(a, name) == getattr(b, name), name


# -- parameters -------------------------------------------------------------------------------------------
def test_get_params_lists_every_constructor_argument_and_set_params_changes_them():
    names = list(inspect.signature(TAC).parameters)
    model = TAC(4, mode="trained", tau=0.01, random_state=7)
    params = model.get_params()
    assert list(params) == names
    assert (params["n_clusters"], params["mode"], params["tau"], params["random_state"]) == (4, "trained", 0.01, 7)
    assert params == model.get_params(deep=False)
    assert TAC(**params).get_params() == params
    assert not fitted_names(model)  # the constructor only stores its arguments

    assert model.set_params(n_clusters=3, mode="free") is model
    assert (model.n_clusters, model.mode) == (3, "free") and model.get_params()["tau"] == 0.01
    with pytest.raises(InvalidInputError, match="no parameter 'n_cluster'.*valid: n_clusters, mode"):
        model.set_params(n_cluster=5, tau=0.5)
    assert model.tau == 0.01  # nothing changed


@pytest.mark.parametrize("mode", ["free", "trained"])
def test_a_clone_is_unfitted_and_fits_to_the_same_result_under_the_seed(bed, fitted, mode):
    model = fitted[mode]
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert not fitted_names(copy) and not hasattr(copy, "labels_")
    labels = copy.fit_predict(bed.image_embeddings, bed.vocab_embeddings)
    assert_same_fit(copy, model)
    np.testing.assert_array_equal(labels, model.labels_)


def test_array_likes_and_other_dtypes_give_the_same_result(bed):
    x, v = bed.image_embeddings[:40], bed.vocab_embeddings
    expected = TAC(3, random_state=1).fit(x, v).labels_
    np.testing.assert_array_equal(TAC(3, random_state=1).fit(x.tolist(), v.tolist()).labels_, expected)
    np.testing.assert_array_equal(TAC(np.int64(3), random_state=1).fit(x.astype(np.float64), v).labels_, expected)


# -- fitted attributes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["free", "trained"])
def test_fit_returns_self_and_only_then_sets_the_fitted_attributes(bed, mode):
    x, v = bed.image_embeddings, bed.vocab_embeddings
    x_before, v_before = x.copy(), v.copy()
    model = TAC(bed.n_classes, mode=mode, random_state=0, **FAST[mode])
    params = model.get_params()
    with pytest.raises(AttributeError, match=r"not fitted yet, so it has no labels_: call fit\("):
        model.labels_
    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'"):
        model.no_such_thing

    assert model.fit(x, v) is model
    n, k, d = len(x), bed.n_classes, x.shape[1]
    assert model.get_params() == params  # fitting never changes a parameter
    np.testing.assert_array_equal(x, x_before)  # nor its input
    np.testing.assert_array_equal(v, v_before)
    assert model.labels_.shape == (n,) and model.labels_.dtype == np.int64 and set(model.labels_) <= set(range(k))
    assert model.confidence_.shape == (n,) and ((model.confidence_ > 0) & (model.confidence_ <= 1)).all()
    assert model.cluster_centers_.shape == (k, 2 * d)
    assert model.counterparts_.shape == (n, d) and len(model.anchors_) == k
    assert model.n_centers_ == len(model.semantic_centers_) and set(model.text_indices_) <= set(range(len(v)))
    own, absent = (FREE_ONLY, TRAINED_ONLY) if mode == "free" else (TRAINED_ONLY, FREE_ONLY)
    assert all(hasattr(model, name) for name in own)
    assert not any(hasattr(model, name) for name in absent)
    if mode == "trained":
        np.testing.assert_allclose(model.probabilities_.sum(axis=1), 1, atol=1e-5)


def test_a_refit_replaces_every_fitted_attribute(bed, other_bed):
    model = TAC(bed.n_classes, random_state=0).fit(bed.image_embeddings, bed.vocab_embeddings)
    model.set_params(n_clusters=other_bed.n_classes, mode="trained", **FAST["trained"])
    model.fit(other_bed.image_embeddings, other_bed.vocab_embeddings)
    fresh = TAC(**model.get_params()).fit(other_bed.image_embeddings, other_bed.vocab_embeddings)
    assert_same_fit(model, fresh)  # nothing of the free fit on the first bed is left
    assert not any(hasattr(model, name) for name in FREE_ONLY)

    model.set_params(mode="free").fit(bed.image_embeddings, bed.vocab_embeddings)
    assert len(model.labels_) == len(bed.image_embeddings) and model.cluster_centers_.shape[0] == other_bed.n_classes
    assert not any(hasattr(model, name) for name in TRAINED_ONLY)


# -- input validation -------------------------------------------------------------------------------------
def with_value(a, row, value):
    a = a.copy()
    a[row, 0] = value
    return a


BAD = {  # name: (changes to (K, image rows, vocabulary rows, domain mask, parameters), error, message)
    "1-D images": (lambda x, v: (3, x[:, 0], v, None, {}), InvalidInputError, r"2-D array.*shape \(90,\)"),
    "3-D images": (lambda x, v: (3, x[None], v, None, {}), InvalidInputError, "2-D array"),
    "no images": (lambda x, v: (3, x[:0], v, None, {}), InvalidInputError, "non-empty"),
    "one image": (lambda x, v: (2, x[:1], v, None, {}), EmptyInputError, "at least 2 images"),
    "NaN image": (lambda x, v: (3, with_value(x, 5, np.nan), v, None, {}), InvalidInputError, "image.*row 5"),
    "inf term": (lambda x, v: (3, x, with_value(v, 2, np.inf), None, {}), InvalidInputError, "vocabulary.*row 2"),
    "K > n": (lambda x, v: (91, x, v, None, {}), InvalidInputError, r"larger than the number of images \(90\)"),
    "K = 1": (lambda x, v: (1, x, v, None, {}), InvalidInputError, "at least 2"),
    "other model": (lambda x, v: (3, x, v[:, :12], None, {}), InvalidInputError, "16 dimensions.*12"),
    "short mask": (lambda x, v: (3, x, v, np.zeros(4, bool), {}), InvalidInputError, "domain_mask"),
    "bad mode": (lambda x, v: (3, x, v, None, {"mode": "magic"}), InvalidInputError, "mode"),
    "bad n_centers": (lambda x, v: (3, x, v, None, {"n_centers": 0}), InvalidInputError, "n_centers"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_and_changes_nothing(bed, case):
    make, error, message = BAD[case]
    k, x, v, mask, params = make(bed.image_embeddings, bed.vocab_embeddings)
    unfitted = TAC(k, random_state=0, **params)
    with pytest.raises(error, match=message):
        unfitted.fit(x, v, mask)
    assert not fitted_names(unfitted)

    model = TAC(3, random_state=0).fit(bed.image_embeddings, bed.vocab_embeddings)
    before = {name: getattr(model, name) for name in fitted_names(model)}
    model.set_params(n_clusters=k, **params)
    with pytest.raises(error, match=message):
        model.fit(x, v, mask)
    assert fitted_names(model) == set(before)  # the earlier fit stands, untouched
    assert all(getattr(model, name) is value for name, value in before.items())


def test_a_fitted_model_pickles(fitted):
    model = fitted["trained"]
    loaded = pickle.loads(pickle.dumps(model))
    assert loaded.get_params() == model.get_params()
    assert_same_fit(loaded, model)
    with pytest.raises(AttributeError, match="not fitted"):
        pickle.loads(pickle.dumps(TAC())).labels_
