"""Re-clustering with the reviewer's decisions: verified decisions are never undone, ids are kept, excluded
images stay out, the change summary is exact, and decisions improve the clustering."""
import numpy as np
import pytest

from bench.audit import review, true_clusters
from tac_core.cluster.audit import audit_tac
from tac_core.errors import InvalidInputError
from tac_core.cluster.heads import fit_heads, head_probabilities
from tac_core.cluster.metrics import clustering_accuracy
from tac_core.cluster.recluster import recluster, recluster_tac
from tac_core.cluster.synthetic import make_clip_like_bed
from tac_core.cluster.tac import TAC

D = 8


def unit(a):
    a = np.asarray(a, dtype=np.float32)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def bed():
    return make_clip_like_bed(n_samples=1500, n_distractor_nouns=800, random_state=31)


@pytest.fixture(scope="module")
def free_model(bed):
    return TAC(bed.n_classes, random_state=31).fit(bed.image_embeddings, bed.vocab_embeddings)


@pytest.fixture(scope="module")
def trained_model(bed):
    return TAC(bed.n_classes, mode="trained", epochs=10, random_state=31).fit(bed.image_embeddings,
                                                                              bed.vocab_embeddings)


def random_decisions(labels, seed, n_ids):
    """Edits and decisions a reviewer might make: moves, a split into a new id, verifications, exclusions."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    edited = labels.copy()
    moved = rng.choice(n, n // 20, replace=False)
    edited[moved] = rng.integers(n_ids, size=len(moved))
    split = np.flatnonzero(edited == rng.integers(n_ids))[:15]
    edited[split] = n_ids  # a new cluster made by a split
    verified = rng.random(n) < 0.08
    verified[moved[: len(moved) // 2]] = True
    excluded = rng.random(n) < 0.03
    closed = set(rng.choice(n_ids, 2, replace=False).tolist())
    return edited, verified, closed, excluded


def check_guarantees(result, edited, verified, closed, excluded):
    new = result.labels
    in_closed = np.isin(edited, list(closed)) & ~excluded
    keep = (verified | in_closed) & ~excluded
    assert (new[keep] == edited[keep]).all(), "a verified decision was undone"
    assert (new[excluded] == -1).all()
    assert not (np.isin(new, list(closed)) & ~in_closed & ~excluded).any(), "a verified cluster gained members"
    assert set(np.unique(new[new >= 0])) <= set(np.unique(edited[~excluded & (edited >= 0)]))
    changed = ~excluded & (new != edited)
    assert result.moved == changed.sum() == sum(result.transitions.values())
    for (a, b), count in result.transitions.items():
        assert count == ((edited == a) & (new == b) & ~excluded).sum()
    assert (result.confidence[keep] == 1).all() and (result.confidence[excluded] == 0).all()
    assert ((result.confidence >= 0) & (result.confidence <= 1 + 1e-6)).all()


@pytest.mark.parametrize("seed", range(5))
def test_free_mode_never_undoes_a_decision(bed, free_model, seed):
    edited, verified, closed, excluded = random_decisions(free_model.labels_, seed, bed.n_classes)
    result = recluster_tac(free_model, bed.image_embeddings, edited, verified=verified, verified_clusters=closed,
                           excluded=excluded)
    assert result.mode == "free"
    check_guarantees(result, edited, verified, closed, excluded)
    assert bed.n_classes in result.labels  # the split's cluster survives: it has verified members or is kept


@pytest.mark.parametrize("seed", range(3))
def test_trained_mode_never_undoes_a_decision(bed, trained_model, seed):
    edited, verified, closed, excluded = random_decisions(trained_model.labels_, seed, bed.n_classes)
    result = recluster_tac(trained_model, bed.image_embeddings, edited, verified=verified,
                           verified_clusters=closed, excluded=excluded, random_state=seed)
    assert result.mode == "trained"
    check_guarantees(result, edited, verified, closed, excluded)
    assert result.probabilities.shape == (len(edited), bed.n_classes + 1)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_trained_mode_without_saved_heads_trains_fresh_ones(bed, trained_model):
    edited, verified, closed, excluded = random_decisions(trained_model.labels_, 7, bed.n_classes)
    result = recluster(bed.image_embeddings, trained_model.counterparts_, edited, verified=verified,
                       verified_clusters=closed, excluded=excluded, mode="trained", heads=None, epochs=2,
                       min_steps=60, random_state=0)
    check_guarantees(result, edited, verified, closed, excluded)
    # columns are named after the clusters they hold: most unverified images keep their cluster
    assert (result.labels == edited)[~excluded].mean() > 0.8


def test_no_decisions_keeps_a_converged_clustering_and_its_ids(bed, free_model):
    result = recluster_tac(free_model, bed.image_embeddings, free_model.labels_)
    assert (result.labels == free_model.labels_).mean() > 0.99
    assert result.vanished == []


def blob_case():
    """Clusters 0 and 1 are tight blobs; cluster 2 holds one point of each blob and nothing else."""
    dirs = np.eye(D)
    x = unit(np.concatenate([np.repeat(dirs[:1], 10, 0), np.repeat(dirs[1:2], 10, 0), dirs[:2]]))
    labels = np.array([0] * 10 + [1] * 10 + [2, 2])
    return x, x.copy(), labels


def test_an_emptied_open_cluster_vanishes_and_the_summary_is_exact():
    x, t, labels = blob_case()
    result = recluster(x, t, labels)
    assert result.labels[20] == 0 and result.labels[21] == 1
    assert result.vanished == [2]
    assert result.moved == 2 and result.transitions == {(2, 0): 1, (2, 1): 1}
    frame = result.transitions_frame()
    assert frame["count"].sum() == 2 and set(frame.columns) == {"from", "to", "count"}
    text = result.summary(names={0: "crack", 1: "scratch", 2: "stain"})
    assert "2 images moved" in text and "'stain' → 'crack': 1" in text and "emptied" in text


def test_a_cluster_with_a_fixed_member_never_disappears():
    x, t, labels = blob_case()
    verified = np.zeros(len(labels), bool)
    verified[20] = True
    result = recluster(x, t, labels, verified=verified)
    assert result.labels[20] == 2 and result.labels[21] == 1 and result.vanished == []


def test_verified_clusters_take_no_new_members_and_unassigned_images_join_open_ones():
    dirs = np.eye(D)
    x = unit(np.concatenate([np.repeat(dirs[:3], 10, 0), [dirs[1] + 0.5 * dirs[2]]]))
    labels = np.array([0] * 10 + [1] * 10 + [2] * 10 + [-1])  # the last is unassigned, not excluded
    assert recluster(x, x, labels).labels[30] == 1  # nearest
    result = recluster(x, x, labels, verified_clusters={1})
    assert result.labels[30] == 2  # nearest open cluster: 1 is closed
    assert (result.labels[:30] == labels[:30]).all()
    excluded = np.zeros(len(labels), bool)
    excluded[30] = True
    assert recluster(x, x, labels, excluded=excluded).labels[30] == -1
    everything_closed = recluster(x, x, labels, verified_clusters={0, 1, 2})
    assert everything_closed.labels[30] == -1 and everything_closed.moved == 0


def test_bad_arguments_are_explained():
    x, t, labels = blob_case()
    with pytest.raises(InvalidInputError, match="mode"):
        recluster(x, t, labels, mode="magic")
    with pytest.raises(InvalidInputError, match="verified"):
        recluster(x, t, labels, verified=np.ones(3, bool))
    with pytest.raises(InvalidInputError, match="same samples"):
        recluster(x, t[:3], labels)


@pytest.mark.parametrize("mode", ["free", "trained"])
def test_decisions_improve_accuracy(bed, free_model, trained_model, mode):
    model = free_model if mode == "free" else trained_model
    target = true_clusters(bed.labels, model.labels_)
    queue = audit_tac(model, bed.image_embeddings).order
    edited, verified = review(queue, model.labels_, target, budget=75)  # 5 % of the images
    result = recluster_tac(model, bed.image_embeddings, edited, verified=verified, random_state=0)
    before = clustering_accuracy(bed.labels, model.labels_)
    edits_only = clustering_accuracy(bed.labels, edited)
    after = clustering_accuracy(bed.labels, result.labels)
    assert after > before + 0.02
    assert after >= edits_only - 0.002  # re-clustering keeps what the edits fixed
    if mode == "trained":
        assert after > edits_only  # and the fine-tuned heads carry the lesson to unverified images


def test_fine_tuning_heads_from_a_state_with_anchors():
    rng = np.random.default_rng(0)
    x = unit(rng.normal(size=(300, D)))
    t = unit(x + 0.1 * rng.normal(size=(300, D)))
    nbrs = np.argsort(-(x @ x.T), axis=1)[:, 1:6]
    first = fit_heads(x, t, 3, nbrs, nbrs, epochs=2, batch_size=64, min_steps=20, random_state=0)
    np.testing.assert_allclose(head_probabilities(first.state, x), first.probabilities, atol=1e-5)
    anchors = np.arange(30)
    targets = np.eye(3, dtype=np.float32)[(first.probabilities[anchors].argmax(axis=1) + 1) % 3]  # all moved
    options = dict(epochs=2, batch_size=64, min_steps=200, random_state=0, initial_state=first.state)
    plain = fit_heads(x, t, 3, nbrs, nbrs, **options)
    tuned = fit_heads(x, t, 3, nbrs, nbrs, anchor_indices=anchors, anchor_targets=targets, anchor_weight=20.0,
                      **options)
    on_target = lambda p: (p[anchors] * targets).sum(axis=1).mean()  # noqa: E731
    assert on_target(tuned.probabilities) > on_target(plain.probabilities) + 0.3
    assert (tuned.probabilities[anchors].argmax(axis=1) == targets.argmax(axis=1)).mean() > 0.7


def test_tac_keeps_its_trained_heads(bed, trained_model):
    p = head_probabilities(trained_model.heads_, bed.image_embeddings)
    np.testing.assert_allclose(p, trained_model.probabilities_, atol=1e-5)
