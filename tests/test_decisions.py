"""The reviewer's decisions (``ReviewSession.decided`` / ``moved``) and re-clustering a reviewed run into a new
run that keeps them (``tac_core.workspace.recluster_run``), without the app."""
from __future__ import annotations

import numpy as np
import pytest

from review_workspace import MISLABELLED, real_workspace, synthetic_workspace
from tac_core.errors import InvalidInputError
from tac_core.workspace.recluster_run import recluster_into_new_run
from tac_core.workspace.review import ReviewSession


@pytest.fixture
def session(tmp_path):
    workspace, run_id = synthetic_workspace(tmp_path, 30, 3)
    yield ReviewSession(workspace, run_id, session_id="A")
    workspace.close()


def positions(session: ReviewSession, mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


def test_explicit_edits_decide_their_images_and_taking_them_back_undecides(session):
    ids = session.state.image_ids
    assert not session.decided().any() and not session.moved().any()
    session.move(ids[[0, 1]], 2)
    session.verify_images(ids[[2]])
    session.exclude(ids[[3]])
    assert positions(session, session.decided()) == [0, 1, 2, 3]
    assert positions(session, session.moved()) == [0, 1]
    session.verify_images(ids[[2]], verified=False)  # un-verify, include again: no longer decided
    session.exclude(ids[[3]], excluded=False)
    assert positions(session, session.decided()) == [0, 1]
    session.verify_images(ids[[0]], verified=False)  # a later un-verify takes a move's decision back too
    assert positions(session, session.decided()) == [1] and positions(session, session.moved()) == [0, 1]


def test_undo_and_redo_follow_the_edits_in_effect(session):
    ids = session.state.image_ids
    session.move(ids[[4]], 0)
    session.verify_images(ids[[5]])
    session.undo()
    assert positions(session, session.decided()) == [4]
    session.undo()
    assert not session.decided().any() and not session.moved().any()
    session.redo()
    assert positions(session, session.moved()) == [4]


def test_verified_cluster_decides_its_members_and_structure_edits_decide_nothing(session):
    state = session.state
    session.rename(0, "crack")
    session.merge(2, 1)
    session.split(1, state.image_ids[state.labels == 1][:2])
    assert not session.decided().any()
    session.verify_cluster(0)
    assert np.array_equal(session.decided(), state.labels == 0)
    session.move(state.image_ids[[np.flatnonzero(state.labels == 0)[0]]], 1)  # leaves the verified cluster
    assert np.array_equal(session.decided(), (state.labels == 0) | session.moved())


def test_decisions_of_other_sessions_and_after_reopening(session):
    ids = session.state.image_ids
    other = ReviewSession(session.workspace, session.run_id, session_id="B")
    other.verify_images(ids[[7, 8]])
    session.refresh()
    assert positions(session, session.decided()) == [7, 8]
    session.move(ids[[9]], 1)
    reopened = ReviewSession(session.workspace, session.run_id)
    assert np.array_equal(reopened.decided(), session.decided())
    assert np.array_equal(reopened.moved(), session.moved())


# -- re-clustering into a new run ------------------------------------------------------------------------
@pytest.fixture
def reviewed(tmp_path, elpv_images):
    workspace, run_id, ids = real_workspace(tmp_path / "data", elpv_images)
    yield workspace, run_id, ids
    workspace.close()


def test_recluster_keeps_decisions_and_fixes_the_rest(reviewed):
    workspace, run_id, ids = reviewed
    session = ReviewSession(workspace, run_id, session_id="setup")
    session.rename(0, "cracks")
    session.verify_cluster(1)  # closed: nothing joins or leaves it
    session.verify_images([int(ids[5])])  # a misfit the reviewer kept where it is (cluster 2)
    session.move([int(ids[9])], 2)  # image 9 (cluster 0) belongs in cluster 2
    session.exclude([int(ids[12])])
    outcome = recluster_into_new_run(session)

    assert outcome.parent_run_id == run_id and outcome.run_id != run_id
    assert outcome.changes.iloc[0].to_dict() == {"from_id": 0, "from": "cracks", "to_id": 2, "to": "cluster 2",
                                                 "images": 1}
    assert outcome.vanished == []
    run = workspace.run(outcome.run_id)
    assert run["parent_run_id"] == run_id and run["params"]["recluster"]["closed_clusters"] == [1]
    assert run["params"]["recluster"]["excluded"] == 1 and run["params"]["n_clusters"] == 3
    child = ReviewSession(workspace, outcome.run_id)
    pos = child.state.positions(np.array([ids[5], ids[9], ids[MISLABELLED]]))
    assert [child.state.names[c] for c in child.state.labels[pos]] == ["cluster 2"] * 3
    assert child.state.verified[pos[:2]].all() and not child.state.verified[pos[2]]  # decisions carried, a fix not
    excluded = child.state.positions(np.array([ids[12]]))
    assert child.state.excluded[excluded].all()
    assert child.state.labels[excluded] == session.state.labels[session.state.positions(np.array([ids[12]]))]
    assert child.clusters().set_index("name").loc["cluster 1", "verified"]
    assert [h["kind"] for h in child.history()] == ["verify_images", "verify_cluster", "exclude"]
    assert {h["session"] for h in child.history()} == {f"carried from run {run_id}"}
    assert np.array_equal(child.decided(), session.decided())
    for name in ("image_embeddings", "counterparts", "projection"):
        assert np.array_equal(workspace.load_run_array(outcome.run_id, name), workspace.load_run_array(run_id, name))
    centers = workspace.load_run_array(outcome.run_id, "cluster_centers")
    assert centers.shape == (3, 32) and np.allclose(np.linalg.norm(centers, axis=1), 1, atol=1e-5)
    assert ReviewSession(workspace, run_id).clusters()["name"].tolist() == ["cracks", "cluster 1", "cluster 2"]


def test_recluster_without_saved_embeddings_says_what_to_do(tmp_path, elpv_images):
    workspace, run_id, _ = real_workspace(tmp_path / "data", elpv_images, without=("counterparts",))
    with pytest.raises(InvalidInputError, match="no saved image embeddings and text counterparts"):
        recluster_into_new_run(ReviewSession(workspace, run_id))
    assert len(workspace.runs()) == 1  # no half-made run
    workspace.close()
