"""What the audit scores for a review session (``tac_core.workspace.review_audit``), without the app: labels
with exclusions, what counts as verified, when the saved centres are used, head probabilities grouped by the
run clusters a cluster is made of, the free-mode fallback after a split, and the queue it gives."""
from __future__ import annotations

import numpy as np
import pytest

from review_workspace import MISLABELLED, real_workspace
from tac_core.cluster.audit import audit
from tac_core.errors import InvalidInputError
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.review_audit import (AuditQueue, audit_inputs, audit_session, can_audit, current_centers,
                                             grouped_probabilities, run_arrays)


@pytest.fixture
def reviewed(tmp_path, elpv_images):
    workspace, run_id, ids = real_workspace(tmp_path / "data", elpv_images)
    yield ReviewSession(workspace, run_id, session_id="A"), ids
    workspace.close()


def test_inputs_follow_the_review_state(reviewed):
    session, ids = reviewed
    workspace, run_id = session.workspace, session.run_id
    saved = workspace.load_run_array(run_id, "cluster_centers")
    inputs = audit_inputs(session)
    assert np.array_equal(inputs["labels"], session.state.labels) and not inputs["verified"].any()
    assert np.array_equal(inputs["cluster_centers"], saved)  # no label edited: the run's own centres
    assert "probabilities" not in inputs  # a free-mode run

    session.exclude([int(ids[0])])
    session.verify_cluster(1)
    session.verify_images([int(ids[3])], verified=False)  # not a decision: nothing changes for image 3
    inputs = audit_inputs(session)
    assert inputs["labels"][0] == -1 and inputs["cluster_centers"] is not None  # excluding moves no label
    assert np.array_equal(inputs["verified"], (session.state.labels == 1) | (np.arange(len(ids)) == 0))

    session.move([int(ids[4])], 2)
    inputs = audit_inputs(session)
    assert inputs["cluster_centers"] is None  # a label changed: the means of the clusters as they are now
    assert inputs["verified"][session.state.positions(np.array([ids[4]]))].all()  # decided
    session.undo()
    assert np.array_equal(audit_inputs(session)["cluster_centers"], saved)

    decided = np.zeros(len(ids), bool)
    decided[7] = True  # a caller's own decided mask is taken as given
    assert audit_inputs(session, decided)["verified"][7]


def test_head_probabilities_grouped_by_merges_and_dropped_after_a_split(reviewed):
    session, ids = reviewed
    workspace, run_id = session.workspace, session.run_id
    labels = session.state.labels.copy()
    p = np.full((len(ids), 3), 0.05, np.float32)
    p[np.arange(len(ids)), labels] = 0.9
    workspace.save_run_array(run_id, "probabilities", p)
    workspace.save_run_array(run_id, "text_probabilities", p)
    assert np.array_equal(audit_inputs(session)["probabilities"], p)
    assert audit_session(session).mode == "trained"

    session.merge(2, 0)
    grouped = audit_inputs(session)["probabilities"]
    assert np.allclose(grouped[:, 0], p[:, 0] + p[:, 2]) and np.array_equal(grouped[:, 1], p[:, 1])
    assert grouped.shape == (len(ids), 2)  # one column per cluster id up to the highest left
    assert audit_session(session).mode == "trained"

    session.split(1, [int(ids[1])])  # a cluster the heads never saw
    assert "probabilities" not in audit_inputs(session)
    assert audit_session(session).mode == "free"
    assert grouped_probabilities(None, session.state) is None


def test_queue_ranks_misfits_first_and_decided_images_leave_it(reviewed):
    session, ids = reviewed
    queue = audit_session(session)
    assert isinstance(queue, AuditQueue) and len(queue.queue) == len(ids)
    assert set(queue.queue[:3].tolist()) == {1, 5, MISLABELLED}  # the planted misfits
    assert np.array_equal(queue.rank[queue.queue], np.arange(len(ids)))
    assert (np.diff(queue.score[queue.queue]) <= 1e-6).all()
    direct = audit(**audit_inputs(session))
    assert np.array_equal(queue.score, direct.score) and queue.reasons == direct.reasons

    first = int(queue.queue[0])
    session.verify_images([int(ids[first])])
    pending = queue.pending(session.decided())
    assert first not in pending.tolist() and len(pending) == len(ids) - 1
    waiting = queue.waiting(session.decided(), session.state.labels, [0, 1, 2, 7])
    assert waiting.sum() == len(pending) and waiting[3] == 0
    assert waiting[session.state.labels[first]] == np.sum(session.state.labels == session.state.labels[first]) - 1

    session.exclude([int(ids[2])])
    session.verify_cluster(0)
    rescored = audit_session(session)
    audited = np.ones(len(ids), bool)
    audited[[first, 2]] = False
    audited[session.state.labels == 0] = False
    assert sorted(rescored.queue.tolist()) == np.flatnonzero(audited).tolist()
    assert (rescored.rank[~audited] == -1).all()


def test_progress_counts_decisions_the_same_in_every_session(reviewed):
    session, ids = reviewed
    queue = audit_session(session)
    assert queue.progress(session.decided()) == (0, len(ids))
    session.verify_images([int(ids[queue.queue[0]])])
    session.move([int(ids[queue.queue[1]])], 0, verify=True)
    session.exclude([int(ids[queue.queue[2]])])
    assert queue.progress(session.decided()) == (3, len(ids))
    fresh = audit_session(session)  # a new browser session scores afresh: decided images are not queued
    assert len(fresh.queue) == len(ids) - 3 and fresh.progress(session.decided()) == (3, len(ids))
    session.undo()  # the exclusion taken back: the image is pending again in the old queue
    assert queue.progress(session.decided()) == (2, len(ids))


def test_runs_without_embeddings_cannot_be_audited(tmp_path, elpv_images):
    workspace, run_id, _ = real_workspace(tmp_path / "data", elpv_images, without=("image_embeddings",))
    session = ReviewSession(workspace, run_id)
    assert not can_audit(session) and run_arrays(session)("image_embeddings") is None
    with pytest.raises(InvalidInputError, match="no saved image embeddings and text counterparts"):
        audit_session(session)
    workspace.close()


def test_current_centers_leave_excluded_images_out():
    features = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], np.float32)
    centers = current_centers(features, np.array([0, 1, 1, -1]))
    assert centers.shape == (2, 2)
    assert np.allclose(centers[0], [1, 0]) and np.allclose(centers[1], np.array([1, 2]) / np.sqrt(5))
