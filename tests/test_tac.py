"""The maths of each TAC step on small arrays, and the estimator's behaviour end to end."""
import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from tac_core.errors import EmptyInputError, InvalidInputError
from tac_core.cluster.heads import batch_entropy, cluster_contrastive_loss, consistency_loss
from tac_core.cluster.kmeans import spherical_kmeans
from tac_core.cluster.metrics import class_recalls, clustering_accuracy, evaluate, macro_recall
from tac_core.progress import CancelToken, Cancelled
from tac_core.cluster.synthetic import make_clip_like_bed
from tac_core.cluster.tac import TAC, select_nouns, semantic_center_count, text_counterparts


def unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def bed():
    return make_clip_like_bed(n_samples=1500, n_classes=6, dim=64, n_distractor_nouns=800, random_state=3)


# --- step 1: semantic centres and noun selection ------------------------------------------------------
def test_semantic_center_rule_follows_reference_with_a_floor():
    assert semantic_center_count(50_000, 10) == 167  # the reference's N/300
    assert semantic_center_count(300, 5) == 15  # floor 3K instead of a single centre
    assert semantic_center_count(300, 2) == 10  # absolute floor
    assert semantic_center_count(6, 2) == 6  # never more centres than images


def test_each_centre_keeps_its_top_five_most_confident_nouns():
    rng = np.random.default_rng(0)
    centers = unit(rng.normal(size=(7, 16)))
    vocab = unit(rng.normal(size=(500, 16)))
    selected = select_nouns(centers, vocab, top_per_center=5)

    prob = np.exp(vocab @ centers.T)
    prob /= prob.sum(axis=1, keepdims=True)
    owner, conf = prob.argmax(axis=1), prob.max(axis=1)
    expected = set()
    for c in range(7):
        members = np.flatnonzero(owner == c)
        expected |= set(members[np.argsort(-conf[members])[:5]].tolist())
    assert set(selected.tolist()) == expected
    assert np.bincount(owner[selected], minlength=7).max() <= 5
    assert len(selected) <= 5 * 7


def test_tiny_tau_gives_the_nearest_selected_noun():
    rng = np.random.default_rng(1)
    images = unit(rng.normal(size=(40, 12)))
    nouns = unit(rng.normal(size=(9, 12)))
    counterparts = text_counterparts(images, nouns, tau=1e-5)
    nearest = nouns[np.argmax(images @ nouns.T, axis=1)]
    np.testing.assert_allclose(counterparts, nearest, atol=1e-5)


def test_counterparts_are_unit_vectors_in_the_span_of_the_text_space():
    rng = np.random.default_rng(2)
    images = unit(rng.normal(size=(50, 32)))
    nouns = unit(rng.normal(size=(6, 32)))
    counterparts = text_counterparts(images, nouns, tau=0.005)
    np.testing.assert_allclose(np.linalg.norm(counterparts, axis=1), 1.0, atol=1e-5)
    coef, *_ = np.linalg.lstsq(nouns.T, counterparts.T, rcond=None)
    np.testing.assert_allclose(nouns.T @ coef, counterparts.T, atol=1e-4)


# --- k-means ------------------------------------------------------------------------------------------
def test_kmeans_recovers_separated_directions_and_handles_duplicates():
    rng = np.random.default_rng(4)
    dirs = unit(rng.normal(size=(4, 20)))
    truth = rng.integers(4, size=400)
    x = unit(dirs[truth] + 0.05 * rng.normal(size=(400, 20)))
    result = spherical_kmeans(x, 4, n_init=5, random_state=0)
    assert clustering_accuracy(truth, result.labels) == 1.0
    np.testing.assert_allclose(np.linalg.norm(result.centers, axis=1), 1.0, atol=1e-5)

    # 3 distinct points but 5 clusters wanted: empty clusters are re-seeded, nothing is NaN
    repeated = np.repeat(unit(rng.normal(size=(3, 8))), 10, axis=0)
    result = spherical_kmeans(repeated, 5, n_init=2, random_state=0)
    assert np.isfinite(result.centers).all()
    assert len(np.unique(result.labels)) == 3


def test_kmeans_is_deterministic_and_cancellable():
    x = unit(np.random.default_rng(5).normal(size=(300, 10)))
    a = spherical_kmeans(x, 5, random_state=7)
    b = spherical_kmeans(x, 5, random_state=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        spherical_kmeans(x, 5, random_state=7, cancel=token)


# --- trained-mode losses -------------------------------------------------------------------------------
def test_losses_reward_agreement_and_balance():
    p = torch.eye(4).repeat(8, 1)  # 32 samples, perfectly balanced one-hot
    shuffled = p[torch.randperm(32, generator=torch.Generator().manual_seed(0))]
    assert cluster_contrastive_loss(p, p, 0.5) < cluster_contrastive_loss(p, shuffled, 0.5)
    assert consistency_loss(p, p).item() == pytest.approx(0.0, abs=1e-6)
    assert consistency_loss(p, shuffled).item() > 1.0
    assert batch_entropy(p).item() == pytest.approx(np.log(4), abs=1e-5)
    collapsed = torch.zeros(32, 4)
    collapsed[:, 0] = 1
    assert batch_entropy(collapsed).item() == pytest.approx(0.0, abs=1e-6)


# --- the estimator ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["free", "trained"])
def test_tac_beats_image_kmeans_on_the_synthetic_bed(bed, mode):
    kmeans = spherical_kmeans(bed.image_embeddings, bed.n_classes, random_state=0)
    model = TAC(bed.n_classes, mode=mode, epochs=10, random_state=0).fit(bed.image_embeddings, bed.vocab_embeddings)
    base = evaluate(bed.labels, kmeans.labels)["ACC"]
    tac = evaluate(bed.labels, model.labels_)["ACC"]
    assert tac > base + 20, (base, tac)
    assert tac > 80
    assert model.labels_.shape == (len(bed.labels),)
    assert ((model.confidence_ > 0) & (model.confidence_ <= 1)).all()
    assert model.cluster_centers_.shape == (bed.n_classes, 2 * bed.image_embeddings.shape[1])
    # the selected nouns include most of the class synonyms and few distractors
    assert np.isin(bed.class_noun_indices, model.selected_indices_).mean() > 0.6


def test_anchors_name_each_cluster_by_its_class_nouns(bed):
    model = TAC(bed.n_classes, random_state=0).fit(bed.image_embeddings, bed.vocab_embeddings)
    for c, anchors in enumerate(model.anchors_):
        members = bed.labels[model.labels_ == c]
        majority = np.bincount(members).argmax()
        top_term = anchors[0][0]
        assert top_term in bed.class_noun_indices[majority]
        scores = [s for _, s in anchors]
        assert scores == sorted(scores, reverse=True)


def test_same_seed_same_result_and_different_seeds_agree(bed):
    a = TAC(bed.n_classes, random_state=1).fit(bed.image_embeddings, bed.vocab_embeddings)
    b = TAC(bed.n_classes, random_state=1).fit(bed.image_embeddings, bed.vocab_embeddings)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.selected_indices_, b.selected_indices_)
    runs = [TAC(bed.n_classes, random_state=s).fit(bed.image_embeddings, bed.vocab_embeddings).labels_
            for s in (11, 12, 13)]
    scores = [evaluate(bed.labels, labels)["ACC"] for labels in runs]
    assert max(scores) - min(scores) < 3, scores  # the reference swings by 14 points
    for other in runs[1:]:
        assert clustering_accuracy(runs[0], other) > 0.95  # same partition up to renaming, bar ~5 %
        assert adjusted_rand_score(runs[0], other) > 0.85


@pytest.mark.slow  # the quick loop checks this on a tiny bed: tests/test_tac_estimator.py
def test_trained_mode_is_deterministic_under_a_seed(bed):
    x, v = bed.image_embeddings[:400], bed.vocab_embeddings
    a = TAC(4, mode="trained", epochs=3, random_state=5).fit(x, v)
    b = TAC(4, mode="trained", epochs=3, random_state=5).fit(x, v)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_allclose(a.probabilities_, b.probabilities_)
    np.testing.assert_allclose(a.probabilities_.sum(axis=1), 1.0, atol=1e-5)


def test_small_collections_use_several_centres_and_work(bed):
    x, truth = bed.image_embeddings[:60], bed.labels[:60]
    model = TAC(bed.n_classes, random_state=0).fit(x, bed.vocab_embeddings)
    assert model.n_centers_ == 3 * bed.n_classes
    assert len(model.selected_indices_) > 5
    assert evaluate(truth, model.labels_)["ACC"] > 70
    two = TAC(2, mode="trained", epochs=2, random_state=0).fit(x[:2], bed.vocab_embeddings)
    assert sorted(two.labels_.tolist()) in ([0, 1], [0, 0], [1, 1])


def test_domain_terms_join_the_text_space_unless_switched_off(bed):
    domain = np.zeros(len(bed.vocab_embeddings), dtype=bool)
    domain[-3:] = True  # three distractors that the filter would never keep
    with_domain = TAC(bed.n_classes, random_state=0).fit(bed.image_embeddings, bed.vocab_embeddings, domain)
    assert set(np.flatnonzero(domain)) <= set(with_domain.text_indices_)
    assert not set(np.flatnonzero(domain)) & set(with_domain.selected_indices_)
    anchor_terms = {t for anchors in with_domain.anchors_ for t, _ in
                    TAC(bed.n_classes, n_anchors=10_000, random_state=0)
                    .fit(bed.image_embeddings, bed.vocab_embeddings, domain).anchors_[0]}
    assert set(np.flatnonzero(domain)) <= anchor_terms
    without = TAC(bed.n_classes, include_domain_terms=False, random_state=0).fit(
        bed.image_embeddings, bed.vocab_embeddings, domain)
    assert not set(np.flatnonzero(domain)) & set(without.text_indices_)


@pytest.mark.parametrize("k,message", [(1, "at least 2"), (10_000, "larger than the number of images"),
                                       (2.5, "integer")])
def test_bad_k_is_explained(bed, k, message):
    with pytest.raises(InvalidInputError, match=message):
        TAC(k).fit(bed.image_embeddings[:50], bed.vocab_embeddings)


def test_bad_arrays_are_explained(bed):
    x, v = bed.image_embeddings[:50].copy(), bed.vocab_embeddings
    with pytest.raises(InvalidInputError, match="same model"):
        TAC(3).fit(x, v[:, :10])
    x[7, 3] = np.nan
    with pytest.raises(InvalidInputError, match="row 7"):
        TAC(3).fit(x, v)
    with pytest.raises(EmptyInputError, match="at least 2 images"):
        TAC(2).fit(bed.image_embeddings[:1], v)
    with pytest.raises(InvalidInputError, match="mode"):
        TAC(3, mode="magic").fit(bed.image_embeddings[:50], v)
    with pytest.raises(InvalidInputError, match="domain_mask"):
        TAC(3).fit(bed.image_embeddings[:50], v, np.zeros(3, dtype=bool))


def test_k_equal_to_n_gives_singletons(bed):
    x = bed.image_embeddings[:8]
    model = TAC(8, random_state=0).fit(x, bed.vocab_embeddings)
    assert sorted(model.labels_.tolist()) == list(range(8))


def test_metrics():
    truth = np.array([0, 0, 1, 1, 2, 2])
    assert evaluate(truth, np.array([2, 2, 0, 0, 1, 1])) == pytest.approx({"ACC": 100, "NMI": 100, "ARI": 100})
    assert clustering_accuracy(truth, np.array([0, 0, 0, 1, 1, 1])) == pytest.approx(4 / 6)
    with pytest.raises(InvalidInputError):
        evaluate(truth, truth[:3])


def test_macro_recall_counts_a_rare_class_as_much_as_the_big_one():
    truth = np.array([0] * 8 + [1, 2])
    one_cluster = np.zeros(10, dtype=int)  # ACC 80 %, yet two of three classes are never found
    assert clustering_accuracy(truth, one_cluster) == pytest.approx(0.8)
    assert class_recalls(truth, one_cluster).tolist() == [1.0, 0.0, 0.0]
    assert macro_recall(truth, one_cluster) == pytest.approx(1 / 3)
    found = np.array([5] * 6 + [6, 6, 7, 8])  # the big class cut in two, both rare ones found
    assert class_recalls(truth, found).tolist() == [0.75, 1.0, 1.0]


def test_anchors_prefer_terms_closer_to_this_cluster_than_to_others():
    from tac_core.cluster.anchors import cluster_anchors
    e = np.eye(3, dtype=np.float32)
    counterparts = np.stack([e[0], e[0], e[1], e[1]])
    labels = np.array([0, 0, 1, 1])
    vocab = unit(np.stack([0.6 * e[0] + 0.8 * e[2],  # specific to cluster 0, cosine 0.6
                           0.8 * e[0] + 0.9 * e[1]]))  # generic: cosine 0.66 to cluster 0, 0.75 to cluster 1
    anchors = cluster_anchors(counterparts, labels, 3, vocab, np.array([0, 1]), top=2)
    assert [term for term, _ in anchors[0]] == [0, 1]  # own term first although its score is lower
    assert anchors[0][0][1] == pytest.approx(0.6, abs=1e-5)
    assert [term for term, _ in anchors[1]] == [1, 0]
    assert anchors[2] == []  # an empty cluster has no anchors
