"""Cluster prototypes: calibrated novelty, verified members preferred, the bucket left out, the stored form."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tac_core.cluster.prototypes import NOVEL_QUANTILE, ClusterPrototypes, fit_prototypes, novelty_temperature
from tac_core.cluster.synthetic import make_clip_like_bed
from tac_core.cluster.tac import TAC
from tac_core.errors import InvalidInputError


@pytest.fixture(scope="module")
def fitted():
    bed = make_clip_like_bed(n_samples=1500, n_classes=4, dim=64, noise=1.2, n_distractor_nouns=300, random_state=4)
    known = bed.labels != 3
    model = TAC(3, random_state=0).fit(bed.image_embeddings[known], bed.vocab_embeddings)
    text_space = bed.vocab_embeddings[model.text_indices_]
    return bed, known, model, text_space


def test_about_two_percent_of_the_runs_own_images_would_land_in_the_bucket_and_the_unseen_class_far_more(fitted):
    bed, known, model, text_space = fitted
    x = bed.image_embeddings
    prototypes = fit_prototypes(x[known], model.counterparts_, model.labels_, text_space, model.tau)
    own = prototypes.assign(x[known])
    assert abs(own.novel.mean() - (1 - NOVEL_QUANTILE)) < 0.01
    assert (own.cluster == model.labels_).mean() > 0.95  # nearest prototype ≈ the clustering itself
    unseen = prototypes.assign(x[~known])
    assert unseen.novel.mean() > 0.5 and np.median(unseen.novelty) > prototypes.threshold
    assert set(prototypes.clusters.tolist()) == {0, 1, 2} and np.all((own.confidence > 0) & (own.confidence <= 1))


def test_a_cluster_with_verified_members_is_sorted_by_them(fitted):
    bed, known, model, text_space = fitted
    x, t, labels = bed.image_embeddings[known], model.counterparts_, model.labels_.copy()
    truth = bed.labels[known]
    a, b = (int(np.bincount(labels[truth == c]).argmax()) for c in (0, 1))
    labels[labels == b] = a  # one cluster holds two classes; the reviewer verified a few of class 0 only
    prefer = np.zeros(len(labels), bool)
    prefer[np.flatnonzero((labels == a) & (truth == 0))[:5]] = True
    mixed = fit_prototypes(x, t, labels, text_space, model.tau)
    verified = fit_prototypes(x, t, labels, text_space, model.tau, prefer=prefer)
    row = int(np.flatnonzero(verified.clusters == a)[0])
    target = np.concatenate([x[prefer], t[prefer]], axis=1).mean(axis=0)
    cosine = lambda p: float(p[row] @ target / np.linalg.norm(target))  # noqa: E731
    assert cosine(verified.centers) > 0.99 > cosine(mixed.centers)


def test_the_bucket_and_excluded_images_make_no_prototype(fitted):
    bed, known, model, text_space = fitted
    labels = model.labels_.copy()
    labels[:10] = -1
    labels[10:40] = 7  # a bucket
    prototypes = fit_prototypes(bed.image_embeddings[known], model.counterparts_, labels, text_space, model.tau,
                                skip=(7,))
    assert 7 not in prototypes.clusters and -1 not in prototypes.clusters
    with pytest.raises(InvalidInputError, match="no cluster"):
        fit_prototypes(bed.image_embeddings[known], model.counterparts_, np.full(len(labels), 7), text_space,
                       model.tau, skip=(7,))


def test_the_stored_classifier_sorts_the_same_and_a_damaged_one_is_refused(fitted, tmp_path):
    bed, known, model, text_space = fitted
    prototypes = fit_prototypes(bed.image_embeddings[known], model.counterparts_, model.labels_, text_space, model.tau)
    (tmp_path / "c.npz").write_bytes(prototypes.to_bytes())
    again = ClusterPrototypes.from_file(tmp_path / "c.npz")
    first, second = prototypes.assign(bed.image_embeddings[:50]), again.assign(bed.image_embeddings[:50])
    np.testing.assert_array_equal(first.cluster, second.cluster)
    np.testing.assert_allclose(first.novelty, second.novelty, rtol=1e-5)
    (tmp_path / "bad.npz").write_bytes(b"not a classifier")
    with pytest.raises(InvalidInputError, match="bad.npz is not a classifier"):
        ClusterPrototypes.from_file(tmp_path / "bad.npz")
    with pytest.raises(InvalidInputError, match="64-dimensional"):
        prototypes.assign(np.ones((2, 32), np.float32))


def test_the_soft_view_mixes_about_fifty_nouns(fitted):
    bed, _, model, text_space = fitted
    x = bed.image_embeddings[:500]
    tau = novelty_temperature(x, text_space)
    p = torch.softmax(torch.as_tensor(x @ text_space.T, dtype=torch.float64) / tau, dim=1)
    perplexity = float(torch.exp(-(p * torch.log(p)).sum(dim=1)).mean())
    assert abs(perplexity - min(50, len(text_space) / 2)) < 0.5
