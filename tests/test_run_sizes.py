"""A run's size verdict (tac_core.run.run_sizes) and the review's possible merges
(tac_core.workspace.review_merges), on small constructed runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

import tac_core.cluster.balance as balance
from review_workspace import split_class_arrays, split_class_workspace
from tac_core.numerics import tac_features
from tac_core.run.params import RunParams
from tac_core.run.run_sizes import SIZE_CHECK_FILE, load_size_check, reference_shares, run_size_check
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.review_merges import review_merges


@pytest.fixture
def forced_uniform(tmp_path, elpv_images):
    ws, run_id, ids = split_class_workspace(tmp_path / "data", elpv_images, {"mode": "trained", "balance": "uniform"})
    yield ws, run_id, ids
    ws.close()


def features(n=24):
    truth, forced, arrays = split_class_arrays(n)
    return truth, forced, tac_features(arrays["image_embeddings"], arrays["counterparts"]).astype(np.float32)


def test_reference_is_the_balance_aware_free_partition_for_each_kind_of_run():
    truth, forced, x = features(120)  # 70 / 30 / 10 / 10
    trained = RunParams(4, mode="trained", balance="uniform")
    assert np.allclose(reference_shares(x, forced, 4, trained), [70 / 120, 30 / 120, 10 / 120, 10 / 120])
    # free uniform: the run's own k-means labels repaired by swaps: the halves merge, the rare pair splits
    free_uniform = RunParams(4, mode="free", balance="uniform")
    assert np.allclose(reference_shares(x, forced, 4, free_uniform), [70 / 120, 30 / 120, 10 / 120, 10 / 120])
    # free estimated: the run is its own reference (nothing computed), whatever its labels
    free_estimated = RunParams(4, mode="free", balance="estimated")
    assert np.allclose(reference_shares(x, forced, 4, free_estimated), [35 / 120, 35 / 120, 30 / 120, 20 / 120])
    # a re-clustered run's labels are the reviewer's: computed from the rows like a trained run's
    assert np.allclose(reference_shares(x, forced, 4, free_estimated, reclustered=True),
                       [70 / 120, 30 / 120, 10 / 120, 10 / 120])


def test_uniform_run_on_an_unequal_set_is_forced_and_the_verdict_is_saved_once(forced_uniform, monkeypatch):
    ws, run_id, _ = forced_uniform
    check = run_size_check(ws, run_id)
    assert check.forced and check.distance > 0.15
    assert "balance='uniform'" in check.reason and "Re-run with balance='estimated'" in check.reason
    assert np.allclose(check.reference_shares, [14 / 24, 6 / 24, 2 / 24, 2 / 24])
    assert np.allclose(check.run_shares, [7 / 24, 7 / 24, 6 / 24, 4 / 24])
    saved = json.loads((ws.run_dir(run_id) / SIZE_CHECK_FILE).read_text())
    assert saved["forced"] is True and saved["reason"] == check.reason

    def fail(*args, **kwargs):
        raise AssertionError("the reference was computed again")

    monkeypatch.setattr(balance, "free_size_profile", fail)
    again = run_size_check(ws, run_id)  # read from the file
    assert again.forced and again.reason == check.reason and np.allclose(again.run_shares, check.run_shares)
    (ws.run_dir(run_id) / SIZE_CHECK_FILE).write_text("{not json")
    assert load_size_check(ws, run_id) is None  # unreadable: computed again (here: refused by the patch)
    with pytest.raises(AssertionError, match="computed again"):
        run_size_check(ws, run_id)


def test_estimated_runs_are_natural_and_runs_without_arrays_get_no_verdict(tmp_path, elpv_images):
    for i, params in enumerate(({"mode": "free", "balance": "estimated"}, {"mode": "trained", "balance": "estimated"})):
        ws, run_id, _ = split_class_workspace(tmp_path / f"data{i}", elpv_images, params, forced=False)
        check = run_size_check(ws, run_id)
        assert not check.forced and check.reason.startswith("Cluster sizes look natural")
        assert check.distance < 0.01
        (ws.run_dir(run_id) / "image_embeddings.npy").unlink()
        (ws.run_dir(run_id) / SIZE_CHECK_FILE).unlink()
        assert run_size_check(ws, run_id) is None
        ws.close()


def test_review_merges_suggest_the_halves_smaller_into_larger_and_follow_the_review(forced_uniform):
    ws, run_id, ids = forced_uniform
    session = ReviewSession(ws, run_id)
    x = tac_features(ws.load_run_array(run_id, "image_embeddings"), ws.load_run_array(run_id, "counterparts"))
    merges = review_merges(session.state, x)
    assert [(m.source, m.target) for m in merges] == [(1, 0)]  # equal halves: the lower id is kept
    merge = merges[0]
    assert merge.shared_terms == ("crack", "fracture") and merge.evidence.centroid_similarity > 0.95
    assert all(session.state.labels[p] == c for c, side in zip(merge.evidence.clusters, merge.evidence.examples)
               for p in side) and all(len(side) == 4 for side in merge.evidence.examples)
    session.exclude(ids[list(merge.evidence.examples[0][:1])])  # an excluded image is nobody's example
    assert merge.evidence.examples[0][0] not in review_merges(session.state, x)[0].evidence.examples[0]
    session.move(ids[:3], 1)  # now cluster 1 is the larger: it is kept
    assert [(m.source, m.target) for m in review_merges(session.state, x)] == [(0, 1)]
    session.merge([0], 1)
    assert review_merges(session.state, x) == []  # done: nothing left to merge
