"""Review: every action and its validation, undo/redo across restarts, two sessions, SIGKILL, 50k images."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tac_core.errors import InvalidInputError
from tac_core.inputs.imageset import ImageRecord, ImageSet
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.store import WorkspaceUnreadableError
from tac_core.workspace.workspace import Workspace, create_workspace

REPO = Path(__file__).resolve().parent.parent
LABELS = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
ANCHORS = [[("crack", 0.31), ("scratch", 0.29), ("dent", 0.10)],
           [("dent", 0.27), ("crack", 0.35)],
           [("stain", 0.2)]]


def make_run(ws: Workspace, labels, anchors, names=None, seed: int = 0) -> tuple[int, np.ndarray]:
    """A done run over fresh images; image ids are returned in run order."""
    n = len(labels)
    start = ws.image_counts()["total"]
    records = tuple(ImageRecord(f"/src/img{start + i:06d}.png", f"img{start + i:06d}.png", f"{start + i:064x}",
                                10, 4, 4, "ok", "") for i in range(n))
    ids = np.array(ws.add_image_set(ImageSet("/src", records), "folder", "/src").image_ids)
    run_id = ws.create_run({"n_clusters": len(anchors)}, ids)
    confidence = np.random.default_rng(seed).random(n)
    ws.save_run_result(run_id, ids, np.asarray(labels), confidence, anchors, cluster_names=names)
    return run_id, ids


@pytest.fixture
def ws(tmp_path):
    workspace = create_workspace("review", tmp_path)
    yield workspace
    workspace.close()


@pytest.fixture
def run(ws):
    return make_run(ws, LABELS, ANCHORS)


@pytest.fixture
def session(ws, run):
    return ReviewSession(ws, run[0], session_id="A")


def members(session: ReviewSession, cluster: int) -> list[int]:
    return sorted(session.members(cluster)["image_id"].tolist())


def snapshot(session: ReviewSession) -> tuple:
    s = session.state
    return (s.labels.tolist(), s.verified.tolist(), s.excluded.tolist(), dict(s.names), set(s.verified_clusters),
            list(s.effective), list(s.undone))


# -- actions -------------------------------------------------------------------------------------------------
def test_initial_state_and_views(session, run):
    _, ids = run
    frame = session.clusters()
    assert list(frame.columns) == ["cluster", "name", "size", "excluded", "verified", "verified_share",
                                   "mean_confidence", "top_anchors", "approved_by", "approved_at"]
    assert frame["approved_by"].tolist() == ["", "", ""]  # nobody signed anything off yet
    assert frame["size"].tolist() == [4, 4, 4] and frame["name"].tolist() == ["cluster 0", "cluster 1", "cluster 2"]
    assert frame["top_anchors"][1] == [("crack", 0.35), ("dent", 0.27)]
    by_confidence = session.members(0)
    assert by_confidence["confidence"].is_monotonic_decreasing
    assert session.members(0, "least_confident")["confidence"].is_monotonic_increasing
    assert set(by_confidence["image_id"]) == set(ids[:4].tolist())
    assert {"path", "rel_path", "sha256", "position"} <= set(by_confidence.columns)
    assert not session.can_undo and not session.can_redo and session.history() == []


def test_images_by_position_with_flags_as_they_are_now(session, run):
    _, ids = run
    session.move(ids[[0]], 2)
    session.exclude(ids[[5]])
    frame = session.images([5, 0])
    assert frame["image_id"].tolist() == ids[[5, 0]].tolist() and frame["position"].tolist() == [5, 0]
    assert frame["cluster"].tolist() == [1, 2] and frame["excluded"].tolist() == [True, False]
    assert frame["rel_path"].tolist() == [f"img{i:06d}.png" for i in (5, 0)]


def test_rename(session):
    edit = session.rename(1, "  hairline crack ")
    assert edit.kind == "rename" and edit.cluster == 1 and "'hairline crack'" in edit.text
    assert session.clusters().set_index("cluster").loc[1, "name"] == "hairline crack"


def test_merge_keeps_target_id_and_unions_anchors(session, run):
    _, ids = run
    session.verify_cluster(0)
    session.verify_cluster(1)
    edit = session.merge([1], 0)
    frame = session.clusters().set_index("cluster")
    assert edit.cluster == 0 and list(frame.index) == [0, 2]
    assert frame.loc[0, "size"] == 8 and members(session, 0) == sorted(ids[:8].tolist())
    assert frame.loc[0, "top_anchors"] == [("crack", 0.35), ("scratch", 0.29), ("dent", 0.27)]
    assert frame.loc[0, "verified"]  # both were verified
    session.merge(2, 0)
    assert not session.clusters().set_index("cluster").loc[0, "verified"]  # cluster 2 was not
    assert session.suggest_names(0, n=2) == ["crack", "scratch"]


def test_split_creates_a_new_cluster_with_highest_id_plus_one(session, run):
    _, ids = run
    edit = session.split(0, ids[:2], name="chipped corner")
    assert edit.cluster == 3
    frame = session.clusters().set_index("cluster")
    assert frame.loc[3, "name"] == "chipped corner" and frame.loc[3, "size"] == 2 and frame.loc[0, "size"] == 2
    assert frame.loc[3, "top_anchors"] == [] and session.suggest_names(3) == []
    session.merge(3, 2)  # retire the highest id: the next split still gets a fresh one
    assert session.split(2, ids[8:9]).cluster == 4
    assert session.clusters().set_index("cluster").loc[4, "name"] == "cluster 4"


def test_move_verify_exclude(session, run):
    _, ids = run
    session.move(ids[[0, 4]], 2)
    assert members(session, 2) == sorted(ids[[0, 4, 8, 9, 10, 11]].tolist())
    session.verify_images(ids[[1, 2]])
    session.exclude(ids[[3]])
    frame = session.clusters().set_index("cluster")
    assert frame.loc[0, "size"] == 2 and frame.loc[0, "excluded"] == 1
    assert frame.loc[0, "verified_share"] == pytest.approx(1.0)
    session.verify_images(ids[[2]], verified=False)
    assert session.clusters().set_index("cluster").loc[0, "verified_share"] == pytest.approx(0.5)
    session.verify_cluster(1)
    assert session.clusters().set_index("cluster").loc[1, "verified_share"] == pytest.approx(1.0)
    session.exclude(ids[[3]], excluded=False)
    assert session.clusters().set_index("cluster").loc[0, "excluded"] == 0


def test_a_cluster_emptied_by_moves_stays_until_merged(session, run):
    _, ids = run
    session.move(ids[8:12], 0)
    frame = session.clusters().set_index("cluster")
    assert frame.loc[2, "size"] == 0 and frame.loc[2, "verified_share"] == 0
    session.merge(2, 1)
    assert session.clusters()["cluster"].tolist() == [0, 1]


@pytest.mark.parametrize("action, message", [
    (lambda s, ids: s.rename(7, "x"), "cluster 7 does not exist"),
    (lambda s, ids: s.rename("1", "x"), "cluster id is an integer"),
    (lambda s, ids: s.rename(0, ""), "cluster name is empty"),
    (lambda s, ids: s.rename(0, "   "), "cluster name is empty"),
    (lambda s, ids: s.rename(0, "x" * 201), "at most 200"),
    (lambda s, ids: s.rename(0, "bell\x07"), "control character"),
    (lambda s, ids: s.rename(0, "two\nlines"), "control character"),
    (lambda s, ids: s.merge([0], 0), "cannot merge cluster 0 with itself"),
    (lambda s, ids: s.merge([1, 0], 0), "with itself"),
    (lambda s, ids: s.merge([], 0), "at least one cluster"),
    (lambda s, ids: s.merge([1, 1], 0), "twice"),
    (lambda s, ids: s.merge([9], 0), "cluster 9 does not exist"),
    (lambda s, ids: s.move([999_999], 0), r"not in run .*999999"),
    (lambda s, ids: s.move([], 0), "no images were chosen"),
    (lambda s, ids: s.move([ids[0], ids[0]], 1), "more than once"),
    (lambda s, ids: s.move(ids[:1], 5), "cluster 5 does not exist"),
    (lambda s, ids: s.split(0, ids[4:6]), "2 image\\(s\\) are not in cluster 0"),
    (lambda s, ids: s.split(0, ids[:1], name="\t"), "cluster name is empty"),
    (lambda s, ids: s.verify_images([-1]), "not in run"),
    (lambda s, ids: s.exclude([[1, 2]]), "flat list"),
    (lambda s, ids: s.verify_cluster(3), "cluster 3 does not exist"),
    (lambda s, ids: s.undo(), "nothing to undo"),
    (lambda s, ids: s.redo(), "nothing to redo"),
    (lambda s, ids: s.members(0, order="random"), "member order 'random'"),
])
def test_validation_writes_nothing(session, run, ws, action, message):
    before = snapshot(session)
    with pytest.raises(InvalidInputError, match=message):
        action(session, run[1])
    assert snapshot(session) == before
    assert ws.connection().execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_only_a_finished_run_can_be_reviewed(ws, run):
    pending = ws.create_run({}, run[1])
    with pytest.raises(InvalidInputError, match="pending; only a finished run"):
        ReviewSession(ws, pending)


# -- undo / redo ---------------------------------------------------------------------------------------------
def test_undo_redo_each_kind_restores_exactly(session, run):
    _, ids = run
    edits = [lambda: session.rename(0, "n"), lambda: session.merge([1, 2], 0), lambda: session.split(0, ids[:3]),
             lambda: session.move(ids[5:9], 3), lambda: session.verify_images(ids[:6]),
             lambda: session.verify_cluster(0), lambda: session.exclude(ids[2:4])]
    states = [snapshot(session)[:5]]
    for edit in edits:
        edit()
        states.append(snapshot(session)[:5])
    for expected in reversed(states[:-1]):
        session.undo()
        assert snapshot(session)[:5] == expected
    assert not session.can_undo and session.can_redo
    for expected in states[1:]:
        session.redo()
        assert snapshot(session)[:5] == expected
    assert not session.can_redo


def test_new_edit_clears_redo(session):
    session.rename(0, "a")
    session.rename(0, "b")
    session.undo()
    assert session.can_redo
    session.rename(1, "c")
    assert not session.can_redo
    with pytest.raises(InvalidInputError, match="nothing to redo"):
        session.redo()
    assert session.state.names[0] == "a" and session.edit_count == 2


def test_edits_and_undo_survive_closing_and_reopening(tmp_path):
    ws = create_workspace("persist", tmp_path)
    run_id, ids = make_run(ws, LABELS, ANCHORS)
    first = ReviewSession(ws, run_id)
    first.rename(0, "crack")
    first.merge(1, 0)
    first.split(0, ids[:2], "corner")
    first.exclude(ids[11:])
    first.undo()
    first.undo()
    expected = snapshot(first)
    ws.close()
    with Workspace(ws.path) as reopened:
        second = ReviewSession(reopened, run_id)
        assert snapshot(second) == expected
        assert second.can_redo and second.edit_count == 2
        second.redo()
        assert second.clusters().set_index("cluster").loc[3, "name"] == "corner"
        history = second.history()
        assert [h["kind"] for h in history] == ["rename", "merge", "split", "exclude", "undo", "undo", "redo"]
        assert [h["undone"] for h in history[:4]] == [False, False, False, True]
        assert history[4]["text"].startswith("undid #4: excluded 1 image(s)")
        assert all(h["ts"].endswith("+00:00") for h in history)


# -- two sessions ----------------------------------------------------------------------------------------------
def test_two_sessions_interleave_and_see_each_other(ws, run):
    run_id, ids = run
    a = ReviewSession(ws, run_id, session_id="A")
    b = ReviewSession(ws, run_id, session_id="B")
    a.rename(0, "from A")
    b.rename(1, "from B")  # B catches up with A's rename before writing
    assert b.state.names[0] == "from A"
    assert a.state.names[1] == "cluster 1"
    assert a.refresh() == 1 and a.state.names[1] == "from B"
    a.merge(2, 1)
    with pytest.raises(InvalidInputError, match="cluster 2 does not exist"):
        b.rename(2, "stale")  # B's view was stale; the write checks the current state
    assert 2 not in b.state.names
    edit = b.undo()  # undo is global: it reverts A's merge, the latest edit
    assert "merged cluster 2" in edit.text
    a.refresh()
    assert snapshot(a) == snapshot(b)
    rows = ws.connection().execute("SELECT id, kind, session FROM events ORDER BY id").fetchall()
    assert [(k, s) for _, k, s in rows] == [("rename", "A"), ("rename", "B"), ("merge", "A"), ("undo", "B")]
    assert snapshot(ReviewSession(ws, run_id)) == snapshot(a)


def test_sessions_in_threads_keep_every_edit(ws, run):
    run_id, ids = run
    errors = []

    def work(tag: str, cluster: int) -> None:
        session = ReviewSession(ws, run_id, session_id=tag)
        try:
            for i in range(25):
                session.rename(cluster, f"{tag}{i}")
                session.verify_images(ids[i % 12:i % 12 + 1], verified=bool(i % 2))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(tag, c)) for tag, c in (("A", 0), ("B", 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    final = ReviewSession(ws, run_id)
    assert final.edit_count == 100 and final.state.names[0] == "A24" and final.state.names[1] == "B24"


# -- crash safety ----------------------------------------------------------------------------------------------
CHILD = """
import sys
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import Workspace
ws = Workspace(sys.argv[1])
session = ReviewSession(ws, int(sys.argv[2]), session_id="child")
ids = session.state.image_ids
for i in range(100000):
    if i % 3 == 0:
        edit = session.rename(i % 3, f"name {i}")
    elif i % 3 == 1:
        edit = session.move(ids[i % len(ids):i % len(ids) + 1], (i // 3) % 3)
    else:
        edit = session.verify_images(ids[:5], verified=bool(i % 2))
    print(edit.event_id, flush=True)
"""


@pytest.mark.slow
def test_sigkill_mid_edit_loses_no_acknowledged_edit(ws, run):
    run_id, _ = run
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ws.path), str(run_id)], stdout=subprocess.PIPE,
                             text=True, cwd=REPO)
    acknowledged = []
    deadline = time.monotonic() + 60
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        acknowledged.append(int(line))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL and len(acknowledged) >= 40
    ws.close()
    with Workspace(ws.path) as reopened:
        conn = reopened.connection()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = [row[0] for row in conn.execute("SELECT id FROM events WHERE run_id = ? ORDER BY id", (run_id,))]
        assert stored[:len(acknowledged)] == acknowledged  # every acknowledged edit, in order
        assert len(stored) - len(acknowledged) <= 1  # at most one committed but not yet printed
        session = ReviewSession(reopened, run_id)
        assert session.edit_count == len(stored)
        last_rename = max(i for i in range(len(stored)) if i % 3 == 0)
        assert session.state.names[0] == f"name {last_rename}"
        session.rename(1, "after the crash")  # the workspace is fully usable


def test_a_log_changed_outside_the_app_is_reported(ws, run, session):
    session.rename(0, "a")
    with ws.transaction() as conn:
        conn.execute("INSERT INTO events (run_id, ts, kind, payload, session) VALUES (?, 'x', 'undo', "
                     "'{\"target\": 99}', 'evil')", (run[0],))
    with pytest.raises(WorkspaceUnreadableError, match="does not match the log"):
        ReviewSession(ws, run[0])


# -- scale -----------------------------------------------------------------------------------------------------
def test_50k_images_merge_and_rename_sanity_bound(ws):
    n = 50_000
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 100, n)
    anchors = [[(f"term{c}", 0.3)] for c in range(100)]
    run_id, ids = make_run(ws, labels, anchors)
    started = time.perf_counter()
    session = ReviewSession(ws, run_id)
    opened = time.perf_counter()
    session.merge([5, 6, 7], 4)
    session.rename(4, "merged")
    frame = session.clusters()
    session.move(ids[:5000], 9)
    frame = session.clusters()
    acted = time.perf_counter()
    assert frame.set_index("cluster").loc[9, "size"] >= 5000 and 5 not in set(frame["cluster"])
    assert opened - started < 3 and acted - opened < 3, (opened - started, acted - opened)


def test_move_with_verify_is_one_undoable_event(ws, run, session):
    _, ids = run
    before = session.edit_count
    session.move(ids[:2], 1, verify=True)
    assert session.edit_count == before + 1
    assert members(session, 1) == sorted([*ids[:2].tolist(), *ids[4:8].tolist()])
    assert session.state.verified[:2].all() and not session.state.verified[2:].any()
    assert ReviewSession(ws, run[0]).state.verified[:2].all()  # persisted as one event
    session.undo()
    assert not session.state.verified.any() and members(session, 0) == sorted(ids[:4].tolist())


def test_each_edit_says_what_it_changed_and_when_each_aspect_last_changed(ws, run, session):
    run_id, ids = run
    assert session.changed_at() == 0
    rename = session.rename(0, "cracks")  # every edit may withdraw an approval of a cluster it touches
    assert rename.changes == {"names", "approvals"} and session.changed_at("names") == rename.event_id
    assert session.changed_at("labels", "excluded") == 0
    verify = session.verify_cluster(1)
    assert verify.changes == {"marks", "approvals"} and session.changed_at("labels", "names", "excluded") == rename.event_id
    move = session.move(ids[:2], 1)
    assert move.changes == {"labels", "approvals"}
    assert session.move(ids[2:3], 2, verify=True).changes == {"labels", "verified", "approvals"}
    assert session.exclude(ids[5:6]).changes == {"excluded", "approvals"}
    assert session.merge(2, 1).changes == {"labels", "names", "marks", "approvals"}
    assert session.split(0, ids[3:4]).changes == {"labels", "names", "approvals"}
    undo = session.undo()  # undoing the split changes what the split changed
    assert undo.changes == {"labels", "names", "approvals"} and session.changed_at("labels") == undo.event_id
    assert session.redo().changes == {"labels", "names", "approvals"}
    # another session on the run agrees on every aspect's last change
    other = ReviewSession(ws, run_id, session_id="B")
    for aspect in ("labels", "names", "marks", "verified", "excluded", "approvals"):
        assert other.changed_at(aspect) == session.changed_at(aspect)
    assert other.changed_at() == session.changed_at() == max(h["event_id"] for h in session.history())


def test_bulk_selection_never_takes_excluded_images_and_regions_count_every_point(session, run):
    from tac_core.workspace.review_selection import bulk_selectable, region_selection

    run_id, ids = run
    session.exclude(ids[[1, 5]])
    state = session.state
    assert bulk_selectable(state, np.arange(6)).tolist() == ids[[0, 2, 3, 4]].tolist()
    xy = np.column_stack([np.arange(len(ids)), np.zeros(len(ids))]).astype(np.float32)  # image i at (i, 0)
    box = [{"x": [0.5, 9.5], "y": [-1, 1]}]
    assert region_selection(state, xy, boxes=box).tolist() == ids[[2, 3, 4, 6, 7, 8, 9]].tolist()
    assert region_selection(state, xy, boxes=box, clusters=[2]).tolist() == ids[[8, 9]].tolist()
    lasso = [{"x": [1.5, 4.5, 4.5, 1.5], "y": [-1, -1, 1, 1]}]
    assert region_selection(state, xy, lassos=lasso).tolist() == ids[[2, 3, 4]].tolist()
    assert region_selection(state, xy, boxes=box, shown=np.array([3, 5, 9])).tolist() == ids[[3, 9]].tolist()
