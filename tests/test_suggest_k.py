"""K suggestion: finds the number of semantic classes on TAC features, is reproducible, explains bad input."""
import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from tac_core.errors import InvalidInputError, TacError
from tac_core.progress import CancelToken, Cancelled
from tac_core.cluster.suggest_k import (KSuggestion, cosine_silhouette, default_k_range, suggest_k,
                                suggest_k_on_features)
from tac_core.cluster.synthetic import make_clip_like_bed

N_STYLES = 3


def bed_with(k_true, random_state=0, n_samples=600):
    """512-d like CLIP ViT-B/32: in fewer dimensions random distractor nouns rival the class nouns."""
    return make_clip_like_bed(n_samples=n_samples, n_classes=k_true, n_styles=N_STYLES, dim=512,
                              n_distractor_nouns=3000, random_state=random_state)


@pytest.mark.parametrize("k_true", [4, 7])
def test_suggests_the_number_of_classes_on_tac_features(k_true):
    bed = bed_with(k_true, random_state=k_true)
    suggestion = suggest_k(bed.image_embeddings, bed.vocab_embeddings, k_max=10, random_state=0)
    assert abs(suggestion.best_k - k_true) <= 1, suggestion.rows()
    assert suggestion.explanation.startswith(f"K = {suggestion.best_k}:")

    # image embeddings alone group by the nuisance style, which is why the sweep runs on [x, t]
    images_only = suggest_k_on_features(bed.image_embeddings, k_max=10, random_state=0)
    assert images_only.best_k == N_STYLES


def test_same_seed_same_table_and_other_seeds_agree():
    bed = bed_with(5, random_state=1)
    first = suggest_k(bed.image_embeddings, bed.vocab_embeddings, k_max=8, random_state=3)
    again = suggest_k(bed.image_embeddings, bed.vocab_embeddings, k_max=8, random_state=3)
    other = suggest_k(bed.image_embeddings, bed.vocab_embeddings, k_max=8, random_state=4)
    assert first.rows() == again.rows() and first.best_k == again.best_k
    assert other.best_k == first.best_k


def test_table_follows_the_documented_rule():
    bed = bed_with(4, random_state=2)
    suggestion = suggest_k(bed.image_embeddings, bed.vocab_embeddings, k_max=8)
    rows = suggestion.rows()
    assert [r["k"] for r in rows] == list(range(2, 9))
    assert set(rows[0]) == {"k", "silhouette", "stability", "objective"}
    stable = [r for r in rows if r["stability"] >= suggestion.stability_threshold]
    best = max(r["silhouette"] for r in stable)
    assert suggestion.best_k == min(r["k"] for r in stable if r["silhouette"] >= best - 0.01)
    assert all(-1.0 <= r["silhouette"] <= 1.0 and r["stability"] <= 1.0 + 1e-9 for r in rows)


def test_large_collections_are_swept_on_a_sample_with_progress():
    bed = bed_with(3, n_samples=1500)
    events = []
    suggestion = suggest_k(bed.image_embeddings, bed.vocab_embeddings, k_max=5, max_points=400,
                           progress=lambda stage, done, total: events.append((stage, done, total)))
    assert suggestion.n_points_used == 400
    assert abs(suggestion.best_k - 3) <= 1
    assert {stage for stage, _, _ in events} == {"suggesting K"}
    assert events[-1] == ("suggesting K", 4, 4)
    assert [done for _, done, _ in events] == sorted(done for _, done, _ in events)


def test_cancel_stops_the_sweep():
    bed = bed_with(3, n_samples=200)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        suggest_k(bed.image_embeddings, bed.vocab_embeddings, cancel=token)


def test_tiny_collections_get_the_only_possible_k():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 16)).astype(np.float32)
    suggestion = suggest_k_on_features(x)
    assert isinstance(suggestion, KSuggestion) and suggestion.best_k == 2
    assert "only value" in suggestion.explanation


def test_default_range():
    assert default_k_range(5000) == (2, 30)
    assert default_k_range(60) == (2, 12)
    assert default_k_range(4) == (2, 2)


def test_fast_silhouette_matches_scikit_learn():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(200, 12))
    labels = rng.integers(4, size=200)
    labels[0] = 9  # a singleton cluster scores 0
    features[10] = features[11]
    assert cosine_silhouette(features, labels) == pytest.approx(silhouette_score(features, labels, metric="cosine"),
                                                                abs=1e-9)


@pytest.mark.parametrize("n, kwargs, message", [
    (2, {}, "at least 3 images"),
    (50, {"k_min": 5, "k_max": 4}, "2 ≤ k_min ≤ k_max ≤ 49"),
    (50, {"k_min": 1}, "k_min=1"),
    (50, {"k_max": 50}, "k_max=50"),
    (50, {"k_max": 4.5}, "k_max=4.5"),
    (50, {"n_seeds": 1}, "n_seeds"),
    (50, {"stability_threshold": 1.5}, "stability_threshold"),
])
def test_bad_input_is_explained(n, kwargs, message):
    bed = bed_with(3, n_samples=n)
    with pytest.raises(InvalidInputError, match=message):
        suggest_k(bed.image_embeddings, bed.vocab_embeddings, **kwargs)


def test_mismatched_or_broken_arrays_are_explained():
    bed = bed_with(3, n_samples=50)
    with pytest.raises(TacError, match="same model"):
        suggest_k(bed.image_embeddings, bed.vocab_embeddings[:, :64])
    broken = bed.image_embeddings.copy()
    broken[7, 0] = np.nan
    with pytest.raises(TacError, match="row 7"):
        suggest_k(broken, bed.vocab_embeddings)
    with pytest.raises(TacError, match="domain_mask"):
        suggest_k(bed.image_embeddings, bed.vocab_embeddings, domain_mask=np.ones(3, bool))


def test_an_imbalanced_set_gets_its_k_without_splitting_the_dominant_class():
    """Half the images in one class, the rest from 16 % down to 2 %: the equal-size sweep proposes a K that
    cuts the big class in pieces; the default (balance-aware) sweep finds the eight classes."""
    from tac_core.cluster.tac import TAC

    bed = make_clip_like_bed(n_samples=1000, n_classes=8, n_styles=N_STYLES, dim=512, n_distractor_nouns=3000,
                             size_profile="dominant", random_state=0)
    dominant = bed.labels == 0
    shares = {}
    for balance in ("estimated", "uniform"):
        k = suggest_k(bed.image_embeddings, bed.vocab_embeddings, k_max=12, balance=balance, random_state=0).best_k
        labels = TAC(k, balance=balance, random_state=0).fit(bed.image_embeddings, bed.vocab_embeddings).labels_
        shares[balance] = (k, np.bincount(labels[dominant]).max() / dominant.sum())
    assert shares["estimated"][0] == 8 and shares["estimated"][1] > 0.95, shares
    assert shares["uniform"][1] < 0.5, shares
