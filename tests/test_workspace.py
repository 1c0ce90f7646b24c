"""Workspaces: lifecycle, hostile names, the database's guarantees, images, vocabulary sets and runs."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tac_core.workspace import workspace as workspace_module
from tac_core.errors import EmptyInputError, InvalidInputError, RunStatusError
from tac_core.inputs.imageset import ImageRecord, ImageSet
from tac_core.workspace.store import SCHEMA_VERSION, WorkspaceUnreadableError
from tac_core.workspace.workspace import (DB_NAME, Workspace, create_workspace, data_dir, delete_workspace, list_workspaces,
                                open_workspace, rename_workspace)

HOSTILE_NAMES = ["a/b", "..", "../../etc/passwd", "ünïcødé 工場 ✓", "<script>alert(1)</script>", ".", "C:\\x",
                 "con"]


def record(rel_path: str, sha: str, status: str = "ok", reason: str = "", duplicate_of=None,
           root: str = "/src") -> ImageRecord:
    return ImageRecord(f"{root}/{rel_path}", rel_path, sha, 100, 8, 6, status, reason, duplicate_of)


def image_set(root: str, *records: ImageRecord) -> ImageSet:
    return ImageSet(root, tuple(records))


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "workspaces"


@pytest.fixture
def ws(root):
    workspace = create_workspace("plant", root)
    yield workspace
    workspace.close()


@pytest.fixture
def ws_with_images(ws):
    ids = ws.add_image_set(image_set("/src", *(record(f"{i}.png", f"sha{i}") for i in range(6))),
                           "folder", "/src").image_ids
    return ws, list(ids)


def exited_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


# -- data directory and lifecycle ----------------------------------------------------------------------------
def test_data_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("TAC_STUDIO_DATA", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert data_dir() == Path.home() / ".tac_studio" / "workspaces"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert data_dir() == tmp_path / "local" / "TAC Studio" / "workspaces"
    monkeypatch.setenv("TAC_STUDIO_DATA", str(tmp_path / "mine"))
    assert data_dir() == tmp_path / "mine"


def test_default_root_is_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TAC_STUDIO_DATA", str(tmp_path / "data"))
    create_workspace("first").close()
    assert [info.name for info in list_workspaces()] == ["first"]
    assert list_workspaces()[0].path.parent == tmp_path / "data"


def test_lifecycle_create_list_rename_delete(root):
    assert list_workspaces(root) == []
    with create_workspace("Line 3", root) as ws:
        assert ws.name == "Line 3" and ws.created
        assert {p.name for p in ws.path.iterdir()} >= {DB_NAME, "cache", "thumbs", "files", "runs", "exports"}
        assert ws.cache_dir == ws.path / "cache"
    infos = list_workspaces(root)
    assert [(i.name, i.image_count, i.run_count, i.error) for i in infos] == [("Line 3", 0, 0, "")]
    rename_workspace("Line 3", "Line 3 (2024)", root)
    with open_workspace("line 3 (2024)", root) as ws:  # names match ignoring case
        assert ws.name == "Line 3 (2024)" and ws.path == infos[0].path.resolve()
    delete_workspace(infos[0].path, root)
    assert list_workspaces(root) == [] and [p.name for p in root.iterdir()] == []


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_stay_inside_root_and_are_stored_as_text(root, name):
    with create_workspace(name, root) as ws:
        assert ws.path.parent == root.resolve()
        assert ws.name == name
        assert ws.path.name.isascii() and "/" not in ws.path.name and not ws.path.name.startswith(".")
    assert [p for p in root.iterdir()] == [ws.path]
    assert list_workspaces(root)[0].name == name
    with open_workspace(ws.path) as reopened:
        assert reopened.name == name


@pytest.mark.parametrize("bad", ["", "   ", "x" * 101, "a\x00b", "line\nbreak", "tab\there", "a\u2028b", 42, None])
def test_invalid_names_are_refused(root, bad):
    with pytest.raises(InvalidInputError, match="workspace name"):
        create_workspace(bad, root)
    assert not root.exists() or list(root.iterdir()) == []


def test_duplicate_names_are_refused(root):
    create_workspace("Plant", root).close()
    other = create_workspace("Other", root)
    other.close()
    with pytest.raises(InvalidInputError, match="already exists"):
        create_workspace("plant ", root)
    with pytest.raises(InvalidInputError, match="already exists"):
        rename_workspace(other.path, "PLANT", root)
    rename_workspace("Plant", "PLANT", root)  # a change of case of its own name is fine
    assert sorted(i.name for i in list_workspaces(root)) == ["Other", "PLANT"]


def test_open_errors_name_what_to_do(root, tmp_path):
    create_workspace("Plant", root).close()
    with pytest.raises(InvalidInputError, match="no workspace 'nope'.*'Plant'"):
        open_workspace("nope", root)
    (tmp_path / "plain").mkdir()
    with pytest.raises(InvalidInputError, match="not a TAC Studio workspace"):
        Workspace(tmp_path / "plain")


def test_broken_folders_are_listed_with_an_error_and_can_be_deleted(root):
    create_workspace("Good", root).close()
    (root / "empty-folder").mkdir()
    (root / "garbage").mkdir()
    (root / "garbage" / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    (root / ".creating-abc").mkdir()  # a crashed creation stays hidden
    (root / "stray-file.txt").write_text("x")
    infos = {i.name: i for i in list_workspaces(root)}
    assert set(infos) == {"Good", "empty-folder", "garbage"}
    assert infos["Good"].error == ""
    assert "no workspace.db" in infos["empty-folder"].error
    assert "cannot read" in infos["garbage"].error
    with pytest.raises(WorkspaceUnreadableError, match="cannot read the workspace database"):
        open_workspace(root / "garbage")
    with pytest.raises(InvalidInputError, match="cannot be opened"):
        open_workspace("empty-folder", root)
    delete_workspace("empty-folder", root)
    delete_workspace(root / "garbage", root)
    assert [i.name for i in list_workspaces(root)] == ["Good"]


def test_delete_refuses_a_folder_that_is_not_a_workspace(root, tmp_path):
    create_workspace("Good", root).close()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    with pytest.raises(InvalidInputError):
        delete_workspace(precious, root)
    assert (precious / "keep.txt").exists()


def test_database_is_wal_versioned_with_foreign_keys(ws):
    conn = ws.connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    with pytest.raises(sqlite3.IntegrityError):
        with ws.transaction() as c:
            c.execute("INSERT INTO run_images (run_id, position, image_id) VALUES (999, 0, 999)")


def test_newer_schema_is_refused(ws):
    with ws.transaction() as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    ws.close()
    with pytest.raises(WorkspaceUnreadableError, match="newer"):
        Workspace(ws.path)


def test_failed_transaction_leaves_nothing(ws):
    with pytest.raises(RuntimeError):
        with ws.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
            raise RuntimeError("boom")
    assert ws.connection().execute("SELECT COUNT(*) FROM meta WHERE key = 'x'").fetchone()[0] == 0


def test_connections_are_per_thread(ws):
    errors = []

    def work(i: int) -> None:
        try:
            for j in range(20):
                ws.save_vocab_set(f"set {i}", {"j": j})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(ws.vocab_sets()["version"]) == [20, 20, 20, 20]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files through /proc")
def test_connections_of_finished_threads_are_closed(ws):
    def open_db_files() -> int:
        fds = Path("/proc/self/fd")
        return sum(1 for fd in fds.iterdir() if _readlink(fd).endswith("/" + DB_NAME))

    for _ in range(20):  # Streamlit runs every rerun in a new thread
        thread = threading.Thread(target=ws.image_counts)
        thread.start()
        thread.join()
    assert open_db_files() <= 2
    ws.close()
    assert open_db_files() == 0


def _readlink(path: Path) -> str:
    try:
        return str(path.readlink())
    except OSError:
        return ""


# -- images --------------------------------------------------------------------------------------------------
def test_add_image_set_stores_every_record(ws):
    added = ws.add_image_set(image_set("/a", record("a.png", "s1", root="/a"), record("b.png", "s2", root="/a"),
                                       record("b-copy.png", "s2", "duplicate", "same content as b.png", "b.png",
                                              root="/a"),
                                       record("notes.txt", "", "skipped", "not an image file", root="/a")),
                             "folder", "/a")
    assert added.image_ids == (1, 2) and added.duplicates == 1 and added.skipped == 1
    frame = ws.images()
    assert list(frame.columns) == ["id", "source_id", "source_kind", "path", "rel_path", "sha256", "size_bytes",
                                   "width", "height", "status", "reason", "duplicate_of"]
    copy = frame.set_index("rel_path").loc["b-copy.png"]
    assert copy["status"] == "duplicate" and copy["duplicate_of"] == 2
    assert ws.image_counts() == {"ok": 2, "skipped": 1, "duplicate": 1, "total": 4}
    assert list(ws.skipped_images()["rel_path"]) == ["b-copy.png", "notes.txt"]
    assert list(ws.images("ok")["id"]) == [1, 2]
    assert ws.sources().iloc[0][["kind", "location", "root"]].tolist() == ["folder", "/a", "/a"]


def test_duplicates_across_adds_point_at_the_existing_image(ws):
    first = ws.add_image_set(image_set("/a", record("x.png", "same", root="/a")), "folder", "/a")
    second = ws.add_image_set(image_set("/b", record("y.png", "same", root="/b"), record("z.png", "new", root="/b"),
                                        record("z2.png", "new", "duplicate", "same content as z.png", "z.png",
                                               root="/b")),
                              "upload", "3 files")
    assert second.duplicates == 2 and len(second.image_ids) == 1
    frame = ws.images().set_index("rel_path")
    assert frame.loc["y.png", "status"] == "duplicate"
    assert frame.loc["y.png", "duplicate_of"] == first.image_ids[0]
    assert "already in this workspace" in frame.loc["y.png", "reason"]
    assert frame.loc["z2.png", "duplicate_of"] == second.image_ids[0]
    again = ws.add_image_set(image_set("/a", record("x.png", "same", root="/a")), "folder", "/a")
    assert again.image_ids == () and again.duplicates == 1
    assert ws.image_counts()["ok"] == 2


def test_add_image_set_validates_kind_and_survives_undecodable_names(ws):
    with pytest.raises(InvalidInputError, match="source kind 'ftp'"):
        ws.add_image_set(image_set("/a"), "ftp", "/a")
    added = ws.add_image_set(image_set("/a", record("bad\udcff.png", "s1", root="/a"),
                                       record("good.png", "s1", "duplicate", "", "bad\udcff.png", root="/a")),
                             "zip", "a.zip")
    frame = ws.images()
    assert frame["status"].tolist() == ["skipped", "ok"] and added.image_ids == (2,)
    assert "not valid UTF-8" in frame["reason"][0]


def test_invalid_status_filter(ws):
    with pytest.raises(InvalidInputError, match="image status 'bad'"):
        ws.images("bad")


# -- vocabulary sets -----------------------------------------------------------------------------------------
def test_vocab_sets_are_versioned_and_replaced(ws):
    spec = {"wordnet": {"categories": ["artifact"]}, "disabled": ["bank"],
            "domain": [{"term": "solder bridge", "note": "short between pads"}], "templates": "tac7"}
    assert ws.save_vocab_set("defects", spec) == 1
    first = ws.vocab_sets().iloc[0]
    assert ws.load_vocab_set("defects") == spec
    spec["disabled"].append("crane")
    assert ws.save_vocab_set("defects", spec) == 2
    second = ws.vocab_sets().iloc[0]
    assert ws.load_vocab_set("defects")["disabled"] == ["bank", "crane"]
    assert second["created"] == first["created"] and second["updated"] >= first["updated"]
    assert len(ws.vocab_sets()) == 1


def test_vocab_set_errors(ws):
    with pytest.raises(InvalidInputError, match="no vocabulary set named 'nope'"):
        ws.load_vocab_set("nope")
    with pytest.raises(InvalidInputError, match="JSON"):
        ws.save_vocab_set("bad", {"x": {1, 2}})
    with pytest.raises(InvalidInputError, match="JSON"):
        ws.save_vocab_set("nan", {"x": float("nan")})
    with pytest.raises(InvalidInputError, match="must be a dict"):
        ws.save_vocab_set("list", ["a"])
    with pytest.raises(InvalidInputError, match="vocabulary set name"):
        ws.save_vocab_set("", {})


# -- runs ----------------------------------------------------------------------------------------------------
def test_run_lifecycle(ws_with_images):
    ws, ids = ws_with_images
    run_id = ws.create_run({"n_clusters": 2, "mode": "free"}, ids[:4])
    assert ws.run(run_id)["status"] == "pending" and ws.run(run_id)["params"] == {"n_clusters": 2, "mode": "free"}
    assert ws.run_image_ids(run_id).tolist() == ids[:4]
    ws.set_run_status(run_id, "running")
    assert ws.run(run_id)["pid"] > 0 and ws.run(run_id)["status"] == "running"
    assert ws.update_run_progress(run_id, "embedding", 3, 4)
    run = ws.runs().iloc[0]
    assert (run["stage"], run["done"], run["total"], run["status"]) == ("embedding", 3, 4, "running")
    ws.set_run_status(run_id, "failed", error="out of memory")
    assert (ws.run(run_id)["status"], ws.run(run_id)["error"]) == ("failed", "out of memory")
    assert not ws.update_run_progress(run_id, "late", 4, 4)  # a late worker writes nothing
    ws.set_run_status(run_id, "pending")  # run it again
    assert ws.run(run_id)["error"] is None and ws.run(run_id)["stage"] == ""
    child = ws.create_run({"n_clusters": 3}, ids, parent_run_id=run_id)
    assert ws.runs()["id"].tolist() == [child, run_id] and ws.run(child)["parent_run_id"] == run_id
    assert ws.set_run_status(child, "cancelled") is None and ws.run(child)["finished"]


def test_interrupted_run_is_detected_and_can_rerun(ws_with_images):
    ws, ids = ws_with_images
    run_id = ws.create_run({}, ids)
    ws.set_run_status(run_id, "running", pid=exited_pid())
    assert ws.run(run_id)["status"] == "interrupted"
    assert ws.runs().set_index("id").loc[run_id, "status"] == "interrupted"
    assert list_workspaces(ws.path.parent)[0].run_count == 1
    ws.set_run_status(run_id, "pending")
    ws.set_run_status(run_id, "running")
    assert ws.run(run_id)["status"] == "running"


def test_run_status_rules(ws_with_images):
    ws, ids = ws_with_images
    run_id = ws.create_run({}, ids)
    with pytest.raises(RunStatusError, match="no result yet"):
        ws.set_run_status(run_id, "done")
    with pytest.raises(InvalidInputError, match="run status 'finished'"):
        ws.set_run_status(run_id, "finished")
    with pytest.raises(InvalidInputError, match="no run 99"):
        ws.set_run_status(99, "running")
    with pytest.raises(InvalidInputError, match="no run 99"):
        ws.run(99)
    with pytest.raises(InvalidInputError, match="integer"):
        ws.run("1")
    ws.set_run_status(run_id, "cancelled")
    with pytest.raises(RunStatusError, match="cancelled; it cannot become running"):
        ws.set_run_status(run_id, "running")


def test_create_run_validation(ws_with_images):
    ws, ids = ws_with_images
    ws.add_image_set(image_set("/b", record("dup.png", "sha0", root="/b")), "folder", "/b")
    duplicate_id = int(ws.images("duplicate")["id"].iloc[0])
    with pytest.raises(InvalidInputError, match="not usable images.*999"):
        ws.create_run({}, [ids[0], 999])
    with pytest.raises(InvalidInputError, match="not usable images"):
        ws.create_run({}, [duplicate_id])
    with pytest.raises(InvalidInputError, match="more than once"):
        ws.create_run({}, [ids[0], ids[0]])
    with pytest.raises(EmptyInputError):
        ws.create_run({}, [])
    with pytest.raises(InvalidInputError, match="integer ids"):
        ws.create_run({}, [1.5])
    with pytest.raises(InvalidInputError, match="JSON"):
        ws.create_run({"model": object()}, ids)
    with pytest.raises(InvalidInputError, match="no run 42"):
        ws.create_run({}, ids, parent_run_id=42)
    assert ws.runs().empty


def test_save_and_load_run_result(ws_with_images):
    ws, ids = ws_with_images
    run_id = ws.create_run({"k": 3}, ids)
    ws.set_run_status(run_id, "running")
    embeddings = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    order = [ids[5], ids[0], ids[1], ids[2], ids[3], ids[4]]
    ws.save_run_result(run_id, order, np.array([2, 0, 0, 1, 1, 1]), [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
                       [[("crack", 0.31), ("scratch", 0.29)], [("dent", 0.2)], []],
                       {"image_embeddings": embeddings, "projection": embeddings[:, :2]},
                       cluster_names=["cracks", "dents", "other"])
    run = ws.run(run_id)
    assert run["status"] == "done" and run["n_clusters"] == 3 and run["finished"]
    frame = ws.run_assignments(run_id)
    assert frame["image_id"].tolist() == order and frame["position"].tolist() == list(range(6))
    assert frame["cluster"].tolist() == [2, 0, 0, 1, 1, 1]
    assert frame["rel_path"].tolist()[0] == "5.png" and frame["confidence"].tolist()[0] == pytest.approx(0.9)
    assert ws.run_anchors(run_id) == [[("crack", 0.31), ("scratch", 0.29)], [("dent", 0.2)], []]
    assert ws.run_cluster_names(run_id) == {0: "cracks", 1: "dents", 2: "other"}
    np.testing.assert_array_equal(ws.load_run_array(run_id, "image_embeddings"), embeddings)
    assert ws.load_run_array(run_id, "umap") is None
    ws.save_run_array(run_id, "umap", np.zeros((6, 2), np.float32))
    assert ws.load_run_array(run_id, "umap").shape == (6, 2)
    assert sorted(p.name for p in ws.run_dir(run_id).iterdir()) == ["image_embeddings.npy", "projection.npy",
                                                                    "umap.npy"]
    with pytest.raises(RunStatusError, match="done; only a pending or running run"):
        ws.save_run_result(run_id, ids, np.zeros(6, int), np.ones(6), [[]])
    ws.set_run_status(run_id, "done")  # setting done again does nothing
    with pytest.raises(RunStatusError, match="done; it cannot become failed"):
        ws.set_run_status(run_id, "failed")


def test_a_damaged_run_array_is_reported(ws_with_images):
    ws, ids = ws_with_images
    run_id = ws.create_run({}, ids)
    path = ws.save_run_array(run_id, "layout", np.zeros((6, 2)))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(WorkspaceUnreadableError, match="run array .*layout.npy is damaged"):
        ws.load_run_array(run_id, "layout")


def test_default_cluster_names(ws_with_images):
    ws, ids = ws_with_images
    run_id = ws.create_run({}, ids)
    ws.save_run_result(run_id, ids, [0, 0, 1, 1, 0, 1], np.ones(6), [[], []])
    assert ws.run_cluster_names(run_id) == {0: "cluster 0", 1: "cluster 1"}


@pytest.mark.parametrize("change, message", [
    (dict(labels=[0, 0, 3, 1, 1, 1]), "labels must lie in 0..2"),
    (dict(labels=[0, 0, 1]), "one integer per image"),
    (dict(labels=[0.5] * 6), "one integer per image"),
    (dict(confidence=[np.nan] * 6), "finite"),
    (dict(image_ids=[1, 2, 3, 4, 5, 99]), "not in run"),
    (dict(anchors=[[("crack",)], [], []]), r"\(term, score\) pair"),
    (dict(anchors=[[("", 0.1)], [], []]), "a term and a finite score"),
    (dict(arrays={"../escape": np.zeros(2)}), "run array name"),
    (dict(arrays={"objects": np.array([object()])}), "Python objects"),
    (dict(cluster_names=["a", "b"]), "2 cluster names were given for 3 clusters"),
    (dict(cluster_names=["a", "b", "x\x07"]), "control character"),
])
def test_save_run_result_validation(ws_with_images, change, message):
    ws, ids = ws_with_images
    run_id = ws.create_run({}, ids)
    args = dict(image_ids=ids, labels=[0, 0, 1, 1, 2, 2], confidence=np.ones(6), anchors=[[], [], []], arrays=None,
                cluster_names=None)
    args.update(change)
    with pytest.raises(InvalidInputError, match=message):
        ws.save_run_result(run_id, **args)
    assert ws.run(run_id)["status"] == "pending" and ws.run_assignments(run_id).empty
    assert not ws.run_dir(run_id).exists()


def test_arrays_are_written_before_the_run_is_done(ws_with_images, monkeypatch):
    ws, ids = ws_with_images
    run_id = ws.create_run({}, ids)
    seen = []
    original = workspace_module.Workspace.save_run_array

    def spy(self, run, name, array):
        seen.append((name, self.run(run)["status"]))
        return original(self, run, name, array)

    monkeypatch.setattr(workspace_module.Workspace, "save_run_array", spy)
    ws.save_run_result(run_id, ids, np.zeros(6, int), np.ones(6), [[]], {"a": np.zeros(3), "b": np.ones(3)})
    assert seen == [("a", "pending"), ("b", "pending")] and ws.run(run_id)["status"] == "done"
    assert not [p for p in ws.run_dir(run_id).iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_progress_written_by_another_process_is_seen(ws_with_images):
    ws, ids = ws_with_images
    run_id = ws.create_run({}, ids)
    code = ("import sys; from tac_core.workspace.workspace import Workspace; ws = Workspace(sys.argv[1]); "
            "r = int(sys.argv[2]); ws.set_run_status(r, 'running'); ws.update_run_progress(r, 'tac', 7, 9); "
            "ws.set_run_status(r, 'failed', error='stopped on purpose')")
    subprocess.run([sys.executable, "-c", code, str(ws.path), str(run_id)], check=True,
                   cwd=Path(__file__).resolve().parent.parent)
    run = ws.run(run_id)
    assert (run["status"], run["stage"], run["done"], run["error"]) == ("failed", "tac", 7, "stopped on purpose")
