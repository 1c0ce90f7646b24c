"""Intake of a new batch into a reviewed run: sorted into the reviewed clusters, the unseen class into the
unsorted bucket, earlier decisions untouched, the map kept, undoable, and replayed identically."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tac_core.errors import InvalidInputError
from tac_core.workspace.intake import BUCKET_NAME, record_intake, session_arrays, split_unsorted
from tac_core.workspace.review import ReviewSession

from intake_workspace import bed_workspace


@pytest.fixture
def bed(tmp_path):
    bed = bed_workspace(tmp_path)
    yield bed
    bed.workspace.close()


def reviewed(bed) -> ReviewSession:
    """A review with one edit of every kind: rename, move (verifying), verify images and a cluster, exclude."""
    session = ReviewSession(bed.workspace, bed.run_id, session_id="reviewer")
    labels, ids = session.state.labels, session.state.image_ids
    session.rename(0, "scratch")
    session.move([int(ids[labels == 0][0])], 1, verify=True)
    session.verify_images(ids[labels == 2][:5])
    session.verify_cluster(1)
    session.exclude([int(ids[labels == 2][-1])])
    return session


def snapshot(session: ReviewSession) -> dict:
    state = session.state
    return {"ids": state.image_ids.copy(), "labels": state.labels.copy(), "verified": state.verified.copy(),
            "excluded": state.excluded.copy(), "names": dict(state.names), "clusters": set(state.verified_clusters),
            "effective": list(state.effective)}


def test_intake_sorts_the_batch_into_the_reviewed_clusters_and_keeps_every_decision(bed):
    session = reviewed(bed)
    before, n_run = snapshot(session), len(bed.run_ids)
    result = record_intake(session, bed.batch_ids, bed.batch_x, bed.batch_t, bed.batch_xy)
    state = session.state
    assert state.n_run == n_run and len(state.labels) == n_run + len(bed.batch_ids)
    np.testing.assert_array_equal(state.image_ids[n_run:], bed.batch_ids)
    np.testing.assert_array_equal(state.new_mask(), np.arange(len(state.labels)) >= n_run)
    for key in ("ids", "labels", "verified", "excluded"):  # the run's images and every decision on them as they were
        np.testing.assert_array_equal(getattr(state, {"ids": "image_ids"}.get(key, key))[:n_run], before[key])
    assert not state.verified[n_run:].any() and not state.excluded[n_run:].any()
    assert state.verified_clusters == before["clusters"]
    assert {c: n for c, n in state.names.items() if c != state.bucket} == before["names"]
    assert state.names[state.bucket] == BUCKET_NAME and state.bucket == max(before["names"]) + 1
    assert state.effective == before["effective"] + [result.edit.event_id]

    added = state.labels[n_run:]
    known = bed.batch_truth != bed.held_out
    expected = np.array([bed.cluster_of_class.get(int(c), -1) for c in bed.batch_truth])
    assert (added[known] == expected[known]).mean() >= 0.85  # known kinds join their reviewed cluster
    assert (added[known] == state.bucket).mean() <= 0.1
    assert (added[~known] == state.bucket).mean() >= 0.5  # the unseen kind waits in the bucket
    assert result.novel == int((added == state.bucket).sum()) and sum(result.per_cluster.values()) == len(added)
    novelty = state.novelty[n_run:]
    assert np.isnan(state.novelty[:n_run]).all() and novelty[~known].mean() > novelty[known].mean()
    assert session.history()[-1]["kind"] == "intake" and f"{len(added)} new image(s)" in session.history()[-1]["text"]

    arrays = session_arrays(session)  # the map keeps every old point where it was; new points are appended
    run_xy = bed.workspace.load_run_array(bed.run_id, "projection")
    np.testing.assert_array_equal(arrays("projection")[:n_run], run_xy)
    np.testing.assert_allclose(arrays("projection")[n_run:], bed.batch_xy, atol=1e-6)
    np.testing.assert_array_equal(arrays("image_embeddings")[n_run:], bed.batch_x)
    assert arrays("margin") is None  # per-image arrays an intake does not make are not pretended
    frame = session.images(np.arange(n_run - 1, n_run + 2))
    assert frame["new"].tolist() == [False, True, True]
    assert frame["rel_path"].iloc[1] == bed.workspace.images().set_index("id").loc[bed.batch_ids[0], "rel_path"]


def test_intake_is_undone_and_redone_as_one_edit_and_replays_identically(bed):
    session = reviewed(bed)
    before = snapshot(session)
    record_intake(session, bed.batch_ids, bed.batch_x, bed.batch_t, bed.batch_xy)
    after = snapshot(session)
    moved = int(session.state.image_ids[-1])
    session.move([moved], 2)  # an edit on a new image, undone first
    session.undo()
    session.undo()
    undone = snapshot(session)
    for key in ("ids", "labels", "verified", "excluded"):
        np.testing.assert_array_equal(undone[key], before[key])
    assert (undone["names"], undone["clusters"]) == (before["names"], before["clusters"])
    assert session.state.bucket is None and not session.state.new_mask().any() and not session.state.batches
    session.redo()
    np.testing.assert_array_equal(session.state.labels, after["labels"])
    assert session.state.names == after["names"]
    replayed = ReviewSession(bed.workspace, bed.run_id)  # another session reads the same log
    np.testing.assert_array_equal(replayed.state.labels, session.state.labels)
    np.testing.assert_array_equal(replayed.state.novelty, session.state.novelty, strict=True)
    assert replayed.state.bucket == session.state.bucket and replayed.can_redo  # the move is still undone
    replayed.redo()
    session.refresh()
    assert int(session.state.labels[-1]) == 2


def test_a_second_batch_reuses_the_bucket_and_sorts_by_the_clusters_as_edited(bed):
    session = reviewed(bed)
    half = len(bed.batch_ids) // 2
    order = np.random.default_rng(1).permutation(len(bed.batch_ids))
    first, second = np.sort(order[:half]), np.sort(order[half:])
    record_intake(session, bed.batch_ids[first], bed.batch_x[first], bed.batch_t[first], bed.batch_xy[first])
    bucket = session.state.bucket
    session.merge([2], 1)  # the reviewer merges two clusters: the next batch cannot go to cluster 2
    result = record_intake(session, bed.batch_ids[second], bed.batch_x[second], bed.batch_t[second],
                           bed.batch_xy[second])
    added = session.state.labels[-len(second):]
    assert session.state.bucket == bucket and 2 not in set(added.tolist())
    payload = json.loads(bed.workspace.connection().execute("SELECT payload FROM events ORDER BY id DESC").fetchone()[0])
    assert payload["bucket"] == bucket and not payload["new_bucket"]  # novel images would join the same bucket
    assert result.novel == int((added == bucket).sum())
    assert len(session.state.batches) == 2
    with pytest.raises(InvalidInputError, match="already in the review"):
        record_intake(session, bed.batch_ids[second[:1]], bed.batch_x[second[:1]], bed.batch_t[second[:1]])


def test_unsorted_images_become_a_new_cluster_named_from_their_own_anchors(bed):
    session = reviewed(bed)
    record_intake(session, bed.batch_ids, bed.batch_x, bed.batch_t, bed.batch_xy)
    state = session.state
    unsorted = state.image_ids[state.labels == state.bucket]
    edit = split_unsorted(session, unsorted[:10])
    new = edit.cluster
    anchors = session.anchors(new)
    assert len(anchors) > 3 and session.state.names[new] == anchors[0][0]
    assert (session.state.labels[session.state.positions(unsorted[:10])] == new).all()
    session.merge([new], 1)  # a merged cluster shows the union of the anchors
    assert {term for term, _ in anchors} <= {term for term, _ in session.anchors(1)}
    session.undo()
    session.undo()
    assert new not in session.state.names and session.state.extra_anchors == {}
    with pytest.raises(InvalidInputError, match="sit in 2 clusters"):
        split_unsorted(session, [int(unsorted[0]), int(state.image_ids[0])])


def test_intake_refuses_bad_input_and_records_nothing(bed):
    session = reviewed(bed)
    events = len(session.history())
    with pytest.raises(InvalidInputError, match="as many embeddings"):
        record_intake(session, bed.batch_ids, bed.batch_x[:3], bed.batch_t[:3])
    with pytest.raises(InvalidInputError, match="already in the review"):
        record_intake(session, bed.run_ids[:2], bed.batch_x[:2], bed.batch_t[:2])
    assert len(session.history()) == events


def test_the_audit_queue_puts_new_unsorted_and_doubtful_images_first(bed):
    from tac_core.workspace.review_audit import DOUBTFUL_SCORE, audit_session

    session = reviewed(bed)
    record_intake(session, bed.batch_ids, bed.batch_x, bed.batch_t, bed.batch_xy)
    state = session.state
    queue = audit_session(session)
    new, unsorted = state.new_mask(), state.labels == state.bucket
    first = queue.queue[:int(unsorted.sum())]
    assert (new[first] & unsorted[first]).all()  # every unsorted new image before anything else
    doubtful = new & ~unsorted & (queue.score >= DOUBTFUL_SCORE)
    following = queue.queue[len(first):len(first) + int(doubtful.sum())]
    assert doubtful[following].all()
    assert "possibly a new defect" in queue.reasons[first[0]]
    assert all("possibly a new defect" not in queue.reasons[p] for p in np.flatnonzero(~new))
    assert queue.mode == "free" and len(queue.rank) == len(state.labels)


def test_re_clustering_after_an_intake_keeps_the_new_images_and_takes_later_batches(bed):
    from tac_core.workspace.recluster_run import recluster_into_new_run

    session = reviewed(bed)
    half = len(bed.batch_ids) // 2
    record_intake(session, bed.batch_ids[:half], bed.batch_x[:half], bed.batch_t[:half], bed.batch_xy[:half])
    outcome = recluster_into_new_run(session)
    child = ReviewSession(bed.workspace, outcome.run_id)
    np.testing.assert_array_equal(child.state.image_ids, session.state.image_ids)
    np.testing.assert_array_equal(bed.workspace.load_run_array(outcome.run_id, "projection"),
                                  session_arrays(session)("projection"))
    assert child.state.verified[:5].sum() == session.state.verified[:5].sum()  # decisions carried as events
    record_intake(child, bed.batch_ids[half:], bed.batch_x[half:], bed.batch_t[half:], bed.batch_xy[half:])
    assert child.state.new_mask().sum() == len(bed.batch_ids) - half


def test_a_viewer_may_not_add_a_batch(bed):
    from tac_core.workspace.access import AccessDeniedError, User

    bed.workspace.add_member("Vera", "viewer")
    viewer = ReviewSession(bed.workspace, bed.run_id, user=User("Vera"))
    files = set((bed.workspace.run_dir(bed.run_id)).iterdir())
    with pytest.raises(AccessDeniedError, match="reviewer role"):
        record_intake(viewer, bed.batch_ids, bed.batch_x, bed.batch_t, bed.batch_xy)
    assert set(bed.workspace.run_dir(bed.run_id).iterdir()) == files and viewer.history() == []
