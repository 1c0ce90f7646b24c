"""The audit signals on arrays where the answer is known, the ranking, reasons and suggestions, and the queue
on the synthetic bed."""
import numpy as np
import pytest

from tac_core.cluster.audit import SIGNALS, audit, audit_tac
from tac_core.errors import InvalidInputError
from tac_core.cluster.synthetic import make_clip_like_bed
from tac_core.cluster.tac import TAC

D = 16


def unit(a):
    a = np.asarray(a, dtype=np.float32)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def blobs(sizes=(30, 30, 30), spread=0.5, seed=0):
    """Well separated clusters: image and text both near the cluster's own direction."""
    rng = np.random.default_rng(seed)
    dirs = np.eye(D)[: len(sizes)]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = unit(dirs[labels] + spread * rng.normal(size=(len(labels), D)) / np.sqrt(D))
    t = unit(dirs[labels] + 0.3 * spread * rng.normal(size=(len(labels), D)) / np.sqrt(D))
    return x, t, labels, dirs


NAMES = {0: "crack", 1: "scratch", 2: "stain"}


def test_a_point_between_two_centres_is_least_confident():
    x, t, labels, dirs = blobs()
    x[0] = unit(dirs[0] + dirs[1])
    t[0] = unit(dirs[0] + 1.02 * dirs[1])  # still labelled 0, a hair closer to 1 in text
    result = audit(x, t, labels)
    assert np.argmin(result.margin) == 0
    assert np.argmax(result.low_confidence) == 0
    assert result.suggested_cluster[0] == 1
    assert "low confidence" in result.reasons[0]


def test_neighbours_all_in_another_cluster_score_one():
    x, t, labels, dirs = blobs()
    labels[5] = 1  # an image of cluster 0 wrongly put in cluster 1: all its neighbours sit in cluster 0
    result = audit(x, t, labels, names=NAMES)
    assert result.neighbours[5] == 1.0
    assert result.neighbours[np.arange(len(labels)) != 5].max() <= 0.1
    assert "10 of 10 neighbours in 'crack'" in result.reasons[5]
    assert result.suggested_cluster[5] == 0
    assert result.rank[5] == 0


def test_split_exact_duplicates_are_flagged_with_the_partner_cluster():
    x, t, labels, dirs = blobs()
    x[40], t[40] = x[3], t[3]  # image 40 (cluster 1) is a copy of image 3 (cluster 0)
    result = audit(x, t, labels, names=NAMES)
    assert result.duplicates[3] == 1.0 and result.duplicates[40] == 1.0
    assert result.duplicate_of[3] == 40 and result.duplicate_of[40] == 3
    assert result.suggested_cluster[3] == 1 and result.suggested_cluster[40] == 0
    assert "near-duplicate of image 3 in 'crack'" in result.reasons[40]
    others = np.setdiff1d(np.arange(len(labels)), [3, 40])
    assert (result.duplicates[others] == 0).all()
    assert set(result.order[:2]) == {3, 40}
    # a looser copy below the threshold is not a duplicate
    assert audit(x, t, labels, duplicate_threshold=1.01).duplicates.max() == 0


def test_an_atypical_point_is_far_from_its_centre():
    x, t, labels, dirs = blobs()
    x[70] = unit(dirs[2] + 0.9 * np.eye(D)[7])  # still nearest cluster 2, but far out
    result = audit(x, t, labels)
    assert np.argmax(result.atypicality) == 70
    assert result.robust_z[70] > 3.5 and result.atypicality[70] > 0.5
    assert "far from its cluster's centre" in result.reasons[70]
    assert (result.atypicality >= 0).all() and (result.atypicality < 1).all()


def test_image_and_text_views_that_disagree():
    x, t, labels, dirs = blobs()
    x[10] = unit(dirs[1] + 0.05 * dirs[0])  # labelled 0, its text says 0, the image says 1
    result = audit(x, t, labels, names=NAMES)
    assert np.argmax(result.cross_modal) == 10 and result.cross_modal[10] > 0.9
    assert "image and text views disagree (image: 'scratch', text: 'crack')" in result.reasons[10]
    assert result.suggested_cluster[10] == 1


def test_trained_mode_uses_head_probabilities():
    x, t, labels, dirs = blobs()
    p = np.full((len(labels), 3), 0.01, np.float32)
    p[np.arange(len(labels)), labels] = 0.98
    p[7] = [0.41, 0.55, 0.04]
    q = p.copy()
    q[7] = [0.1, 0.85, 0.05]
    result = audit(x, t, labels, probabilities=p, text_probabilities=q, names=NAMES)
    assert result.mode == "trained"
    assert result.confidence[7] == pytest.approx(0.41)
    assert result.margin[7] == pytest.approx(0.41 - 0.55)
    assert "low confidence (0.41)" in result.reasons[7]
    assert result.suggested_cluster[7] == 1
    assert result.rank[7] == 0
    with pytest.raises(InvalidInputError, match="both"):
        audit(x, t, labels, probabilities=p)


def test_signals_are_bounded_and_rank_is_the_score_order():
    x, t, labels, _ = blobs(spread=0.8, seed=3)
    result = audit(x, t, labels)
    for name in SIGNALS + ("score",):
        values = getattr(result, name)
        assert ((values >= 0) & (values <= 1)).all(), name
    assert sorted(result.rank.tolist()) == list(range(len(labels)))
    assert (np.diff(result.score[result.order]) <= 0).all()
    assert len(result.reasons) == len(labels) and all(result.reasons)
    assert len(result.top(0.1)) == 9


def test_weights_steer_the_score():
    x, t, labels, dirs = blobs()
    x[70] = unit(dirs[2] + 0.9 * np.eye(D)[7])  # atypical
    only_atypicality = audit(x, t, labels, weights={s: 0.0 for s in SIGNALS} | {"atypicality": 1.0})
    assert only_atypicality.order[0] == 70
    x[40], t[40] = x[3], t[3]  # a split duplicate pair
    only_duplicates = audit(x, t, labels, weights={s: 0.0 for s in SIGNALS} | {"duplicates": 1.0})
    assert set(only_duplicates.order[:2]) == {3, 40}
    with pytest.raises(InvalidInputError, match="weights"):
        audit(x, t, labels, weights={"low_confidence": -1.0})
    with pytest.raises(InvalidInputError, match="weights"):
        audit(x, t, labels, weights={"typo": 1.0})


def test_excluded_and_verified_leave_the_queue():
    x, t, labels, dirs = blobs()
    labels[5] = 1
    labels[8] = -1
    verified = np.zeros(len(labels), bool)
    verified[5] = True
    result = audit(x, t, labels, verified=verified)
    assert result.reasons[8] == "excluded" and result.reasons[5] == "verified"
    assert result.score[5] == 0 and result.score[8] == 0
    assert set(result.order[-2:]) == {5, 8}
    assert result.suggested_cluster[5] == -1 and result.suggested_cluster[8] == -1
    assert not result.audited[5] and not result.audited[8] and result.audited.sum() == len(labels) - 2


def test_edited_labels_with_a_new_id_and_given_centres():
    x, t, labels, _ = blobs()
    centers = unit(np.stack([np.concatenate([x[labels == c].mean(0), t[labels == c].mean(0)]) for c in range(3)]))
    labels[:5] = 3  # a split made by the reviewer: id 3 has no centre yet
    with pytest.raises(InvalidInputError, match="row for every cluster id"):
        audit(x, t, labels, centers)
    padded = np.vstack([centers, np.zeros((1, 2 * D), np.float32)])
    result = audit(x, t, labels, padded)
    assert np.isfinite(result.score).all()


def test_frame_is_in_queue_order_with_paths():
    x, t, labels, _ = blobs()
    labels[5] = 1
    result = audit(x, t, labels)
    frame = result.to_frame(paths=[f"img{i}.png" for i in range(len(labels))])
    assert frame["rank"].tolist() == list(range(len(labels)))
    assert frame.loc[0, "path"] == "img5.png"
    assert {"score", "reasons", "suggested_cluster", *SIGNALS} <= set(frame.columns)
    with pytest.raises(InvalidInputError, match="paths"):
        result.to_frame(paths=["a"])


def test_bad_shapes_are_explained():
    x, t, labels, _ = blobs()
    with pytest.raises(InvalidInputError, match="same samples"):
        audit(x, t[:-1], labels)
    with pytest.raises(InvalidInputError, match="−1"):
        audit(x, t, labels - 2)
    with pytest.raises(InvalidInputError, match="verified"):
        audit(x, t, labels, verified=np.ones(3, bool))


def test_queue_beats_confidence_and_random_on_the_synthetic_bed():
    bed = make_clip_like_bed(n_samples=1500, n_distractor_nouns=800, random_state=21)
    model = TAC(bed.n_classes, random_state=21).fit(bed.image_embeddings, bed.vocab_embeddings)
    from bench.audit import true_clusters

    target = true_clusters(bed.labels, model.labels_)
    wrong = model.labels_ != target
    result = audit_tac(model, bed.image_embeddings)
    top = result.top(0.05)
    by_confidence = np.argsort(model.confidence_, kind="stable")[: len(top)]
    assert wrong[top].mean() > 4 * wrong.mean()
    assert wrong[top].mean() >= wrong[by_confidence].mean()
    found = top[wrong[top]]
    assert (result.suggested_cluster[found] == target[found]).mean() > 0.5
