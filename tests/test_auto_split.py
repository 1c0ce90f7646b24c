"""The Review page's automatic split of one cluster: the planted groups are found, the proposal is
deterministic, the split is one explicit event replayed from its stored ids, excluded members stay, and every
refusal is a clear error that writes nothing. (The 2-way k-means itself: tests/test_subcluster.py.)"""
from __future__ import annotations

import json

import numpy as np
import pytest

from tac_core.errors import InvalidInputError
from tac_core.inputs.imageset import ImageRecord, ImageSet
from tac_core.workspace.auto_split import propose_split, split_cluster, split_name, split_off
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import create_workspace

D = 16


def planted(n_a: int, n_b: int, seed: int = 0, noise: float = 0.15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image embeddings and counterparts of two groups (a, b) around orthogonal directions; group ids."""
    rng = np.random.default_rng(seed)
    group = np.r_[np.zeros(n_a, int), np.ones(n_b, int)]
    rng.shuffle(group)
    base_x, base_t = np.eye(D)[[0, 1]], np.eye(D)[[2, 3]]
    x = base_x[group] + noise * rng.standard_normal((len(group), D))
    t = base_t[group] + noise * rng.standard_normal((len(group), D))
    return x.astype(np.float32), t.astype(np.float32), group


@pytest.fixture
def ws(tmp_path):
    workspace = create_workspace("split", tmp_path)
    yield workspace
    workspace.close()


def make_run(ws, labels):
    n = len(labels)
    records = tuple(ImageRecord(f"/src/{i:04d}.png", f"{i:04d}.png", f"{i:064x}", 10, 4, 4, "ok", "")
                    for i in range(n))
    ids = np.array(ws.add_image_set(ImageSet("/src", records), "folder", "/src").image_ids)
    run_id = ws.create_run({"n_clusters": int(max(labels)) + 1}, ids)
    ws.save_run_result(run_id, ids, np.asarray(labels), np.linspace(0, 1, n),
                       [[("crack", 0.3)]] + [[("stain", 0.2)]] * int(max(labels)), cluster_names=None)
    return run_id, ids


def test_split_is_deterministic_and_one_explicit_event(ws):
    x, t, group = planted(20, 10, seed=3)
    # cluster 0: the 30 planted images; cluster 1: 5 others
    x = np.r_[x, np.eye(D, dtype=np.float32)[[5] * 5]]
    t = np.r_[t, np.eye(D, dtype=np.float32)[[6] * 5]]
    run_id, ids = make_run(ws, [0] * 30 + [1] * 5)
    session = ReviewSession(ws, run_id, session_id="A")
    session.rename(0, "surface marks")
    first = propose_split(session, 0, x, t)
    again = propose_split(ReviewSession(ws, run_id), 0, x, t)
    assert first.keep.tolist() == again.keep.tolist() and first.split.tolist() == again.split.tolist()
    assert sorted(first.split.tolist()) == sorted(ids[:30][group == 1].tolist())

    edit = split_cluster(session, 0, x, t)
    assert edit.kind == "split" and edit.cluster == 2
    rows = ws.connection().execute("SELECT kind, payload FROM events WHERE run_id = ? ORDER BY id",
                                   (run_id,)).fetchall()
    assert [kind for kind, _ in rows] == ["rename", "split"]
    payload = json.loads(rows[-1][1])
    assert payload["image_ids"] == first.split.tolist() and payload["name"] == "surface marks (split)"
    frame = session.clusters().set_index("cluster")
    assert frame.loc[0, "size"] == 20 and frame.loc[2, "size"] == 10
    # a reopened session replays the stored ids, it does not re-run k-means
    reopened = ReviewSession(ws, run_id)
    assert sorted(reopened.members(2)["image_id"].tolist()) == first.split.tolist()
    session.undo()
    assert session.clusters()["size"].tolist() == [30, 5]


def test_excluded_members_stay_with_the_cluster(ws):
    x, t, group = planted(8, 4, seed=1)
    run_id, ids = make_run(ws, [0] * 12)
    session = ReviewSession(ws, run_id)
    out = ids[group == 1][0]
    session.exclude([out])
    proposal = propose_split(session, 0, x, t)
    assert out not in proposal.split and out not in proposal.keep
    assert len(proposal.keep) + len(proposal.split) == 11


def test_tiny_or_degenerate_clusters_give_clear_errors(ws):
    run_id, ids = make_run(ws, [0, 1, 1, 1])
    session = ReviewSession(ws, run_id)
    x = np.tile(np.eye(D, dtype=np.float32)[:1], (4, 1))
    with pytest.raises(InvalidInputError, match="at least 2"):
        split_cluster(session, 0, x, x)
    with pytest.raises(InvalidInputError, match="too alike"):
        split_cluster(session, 1, x, x)  # identical features: k-means finds one group
    with pytest.raises(InvalidInputError, match="no saved image embeddings"):
        split_cluster(session, 1, None, x)
    with pytest.raises(InvalidInputError, match="does not exist"):
        split_cluster(session, 7, x, x)
    with pytest.raises(InvalidInputError, match="rows"):
        split_cluster(session, 1, x[:2], x[:2])
    assert ws.connection().execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_split_off_takes_only_the_clusters_images_and_names_the_new_cluster(ws):
    run_id, ids = make_run(ws, [0] * 4 + [1] * 4)
    session = ReviewSession(ws, run_id)
    session.rename(0, "x" * 200)  # the longest name allowed
    edit = split_off(session, 0, [ids[0], ids[1], ids[5], 10_000])  # image 5 is in cluster 1; 10,000 is no image
    assert edit.kind == "split" and edit.cluster == 2
    assert sorted(session.members(2)["image_id"]) == ids[:2].tolist() and len(session.members(1)) == 4
    assert session.state.names[2] == split_name("x" * 200) == "x" * 192 + " (split)"
    with pytest.raises(InvalidInputError, match="no images were chosen"):
        split_off(session, 1, [ids[0]])
