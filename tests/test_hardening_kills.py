"""Hardening, crashes and concurrency: real processes killed with a real SIGKILL during image ingest, embedding,
clustering, saving a result, exporting and reviewing; sessions working on one workspace at once.

Each child process runs the real engine code and, at the chosen point, prints READY and waits: the test then
kills it with SIGKILL, so the kill always lands mid-way (never after the work is done). After each kill the
workspace must open with ``PRAGMA integrity_check`` ok, keep what was completed, count nothing half-done, and
let the interrupted step run again. The table of cases is in docs/HARDENING.md.
"""
from __future__ import annotations

import csv
import io
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apptest_helpers import open_app
from bad_inputs import encode, pattern
from tac_core.workspace import ingest
from tac_core.run import cli, jobs
from tac_core.run import params as run_params
from tac_core.run import job
from tac_core.inputs import vocab_spec
from tac_core.embedding.cache import VectorStore
from tac_core.embedding.embed import embed_images, model_cache_dir
from tac_core.workspace.export import export_labels
from tac_core.inputs.thumbnails import thumbnail_path
from tac_core.inputs.imageset import ImageRecord, ImageSet
from tac_core.embedding.models import ModelSpec
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import Workspace, create_workspace

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]

# -- child processes ---------------------------------------------------------------------------------------
WAIT = """
import sys, time
def wait_here():
    print("READY", flush=True)
    time.sleep(600)
"""
INGEST_CHILD = WAIT + """
from pathlib import Path
from tac_core.workspace import ingest
from tac_core.workspace.workspace import Workspace
workspace, how, folder, stage, count = sys.argv[1:6]
def progress(name, done, total):
    if name == stage and done >= int(count):
        wait_here()
ws = Workspace(workspace)
if how == "upload":
    files = sorted(Path(folder).iterdir())
    ingest.add_uploads(ws, [(f"photos/{p.name}", p.read_bytes()) for p in files], progress=progress)
else:
    ingest.add_folder(ws, folder, progress=progress)
print("FINISHED", flush=True)
"""
JOB_CHILD = WAIT + """
from tac_core.run import job
from tac_core.workspace import runs as workspace_runs
workspace, run_id, point, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if point == "saving arrays":
    save, saved = workspace_runs.RunsMixin.save_run_array, []
    def save_and_wait(self, run, name, array):
        path = save(self, run, name, array)
        saved.append(name)
        if len(saved) == count:
            wait_here()
        return path
    workspace_runs.RunsMixin.save_run_array = save_and_wait
else:
    report = job._Reporter.__call__
    def report_and_wait(self, stage, done, total):
        report(self, stage, done, total)
        if stage == point and done >= count:
            self.flush()
            wait_here()
    job._Reporter.__call__ = report_and_wait
print(job.run_job(workspace, run_id), flush=True)
"""
RAY_EMBED_CHILD = WAIT + """
from tac_core.run import cli, embed_cli
def progress(stage, done, total):
    if stage == "embedding images" and done >= 8:
        wait_here()
embed_cli.run(cli.build_parser().parse_args(sys.argv[1:]), progress)
"""
EXPORT_CHILD = WAIT + """
from tac_core import atomic
from tac_core.workspace.export import export_labels
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import Workspace
write_json = atomic.write_json
def write_and_wait(dest, obj):
    if str(dest).endswith("_manifest.json"):
        wait_here()
    write_json(dest, obj)
atomic.write_json = write_and_wait
ws = Workspace(sys.argv[1])
export_labels(ReviewSession(ws, int(sys.argv[2])), ws, int(sys.argv[2]))
"""
REVIEW_CHILD = """
import sys
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import Workspace
ws = Workspace(sys.argv[1])
tag, cluster, edits = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
session = ReviewSession(ws, int(sys.argv[2]), session_id=tag)
ids = session.state.image_ids
for i in range(edits):
    if i % 3 == 0:
        edit = session.rename(cluster, f"{tag} {i}")
    elif i % 3 == 1:
        edit = session.move(ids[i % len(ids):i % len(ids) + 1], cluster)
    else:
        edit = session.verify_images(ids[cluster::3], verified=bool(i % 2))
    print(edit.event_id, flush=True)
print("FINISHED", flush=True)
"""


class Child:
    """A child process running ``script`` with ``args``; its stdout is read line by line (from the pipe itself, so
    no line waits unseen in a buffer), its stderr kept in a file for the failure message."""

    def __init__(self, script: str, *args, log: Path) -> None:
        self.log = log
        with open(log, "wb") as err:
            self.process = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=ROOT,
                                            stdout=subprocess.PIPE, stderr=err, env={**os.environ,
                                            "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
        self.fd = self.process.stdout.fileno()
        self.pending = b""
        self.lines: list[str] = []
        self.ended = False

    def read_line(self, timeout: float) -> str | None:
        """The next line, or None when none came within ``timeout`` seconds or the output ended."""
        while b"\n" not in self.pending:
            if self.ended or not select.select([self.fd], [], [], timeout)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            self.pending += chunk
            self.ended = not chunk
        line, self.pending = self.pending.split(b"\n", 1)
        self.lines.append(line.decode().strip())
        return self.lines[-1]

    def wait_for(self, marker: str = "READY", timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.ended:
            if self.read_line(max(0.0, deadline - time.monotonic())) == marker:
                return
        self.kill()
        raise AssertionError(f"no {marker} within {timeout} s (ended: {self.ended}); got {self.lines[-5:]}\n"
                             f"{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL; every line the child printed before it died is read (it was acknowledged)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            assert self.process.wait() == -signal.SIGKILL
        self.process.wait()
        while self.read_line(5) is not None:
            pass
        self.process.stdout.close()


def integrity_ok(path: Path) -> None:
    with Workspace(path) as ws:
        conn = ws.connection()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def kill_when_ready(script: str, ws: Workspace, *args, log: Path) -> None:
    """Run ``script`` on ``ws`` until it reaches its stopping point (READY), SIGKILL it, check the database."""
    child = Child(script, ws.path, *args, log=log)
    child.wait_for()
    child.kill()
    integrity_ok(ws.path)


def image_folder(folder: Path, n: int, offset: int = 0) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        pattern((24, 24), offset + i).save(folder / f"img{i:03d}.png")
    return folder


# -- ingest ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("point", [("saving uploads", 20), ("scanning images", 10)], ids=["copying", "scanning"])
def test_upload_killed_mid_way_counts_nothing_and_can_be_repeated(tmp_path, point):
    """Killed while copying (files in a hidden staging folder) or while scanning the copy (renamed into place,
    not yet stored): no source, no image, nothing visible counts; the same upload then adds everything."""
    ws = create_workspace("uploads", tmp_path / "data")
    folder = image_folder(tmp_path / "photos", 40)
    kill_when_ready(INGEST_CHILD, ws, "upload", folder, *point, log=tmp_path / "child.log")
    assert ws.sources().empty and ws.image_counts()["total"] == 0
    left = list(ws.files_dir.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".staging-") == (point[0] == "saving uploads")
    copied = list(left[0].rglob("*.png"))
    assert (point[0] == "saving uploads") == (len(copied) < 40)  # really half-way while copying

    a_day_ago = time.time() - 25 * 3600
    os.utime(left[0], (a_day_ago, a_day_ago))  # the upload is repeated a day later: the leftover goes
    report = ingest.add_uploads(ws, [(f"photos/{p.name}", p.read_bytes()) for p in sorted(folder.iterdir())])
    assert (report.added, report.duplicates, report.skipped) == (40, 0, 0) and ws.image_counts()["ok"] == 40
    assert [p.name for p in ws.files_dir.iterdir()] == [Path(ws.sources()["root"].iloc[0]).name]
    ws.close()


def test_folder_add_killed_while_scanning_stores_nothing(tmp_path):
    ws = create_workspace("scan", tmp_path / "data")
    folder = image_folder(tmp_path / "share", 130)
    kill_when_ready(INGEST_CHILD, ws, "folder", folder, "scanning images", 50, log=tmp_path / "child.log")
    assert ws.sources().empty and ws.image_counts()["total"] == 0
    assert ingest.add_folder(ws, folder).added == 130
    ws.close()


def test_folder_add_killed_while_making_thumbnails_keeps_the_images(tmp_path):
    """The add is stored in one transaction before thumbnails are made: killed then, every image is kept, every
    thumbnail on disk is whole, and the missing ones are made later."""
    ws = create_workspace("thumbs", tmp_path / "data")
    folder = image_folder(tmp_path / "share", 130)
    kill_when_ready(INGEST_CHILD, ws, "folder", folder, "making thumbnails", 64, log=tmp_path / "child.log")
    assert ws.image_counts() == {"ok": 130, "skipped": 0, "duplicate": 0, "total": 130}
    made = sorted(ws.thumbs_dir.glob("*.jpg"))
    assert 64 <= len(made) < 130
    for path in made:
        with Image.open(path) as thumb:
            thumb.load()  # complete JPEGs only: each was written to a temporary file and renamed
    ok = ws.images("ok")
    assert ingest.make_thumbnails(ws, list(zip(ok["path"], ok["sha256"]))) == 130 - len(made)
    assert all(thumbnail_path(ws.thumbs_dir, sha).exists() for sha in ok["sha256"])
    again = ingest.add_folder(ws, folder)
    assert (again.added, again.duplicates) == (0, 130)
    ws.close()


# -- jobs --------------------------------------------------------------------------------------------------
@pytest.fixture
def job_workspace(tmp_path, elpv_images, tiny_model_config, tiny_checkpoint):
    ws = create_workspace("kills", tmp_path / "data")
    ingest.add_folder(ws, elpv_images)
    spec = {**vocab_spec.default_spec(), "categories": ["noun.shape"], "templates": "photo1",
            "domain_terms": [{"term": "hairline crack", "note": ""}]}
    model = {"name": str(tiny_model_config), "checkpoint": str(tiny_checkpoint)}
    params = run_params.RunParams(model=model, vocab_set="s", vocab_spec=spec, n_clusters=3, projection="pca",
                              suggest_k=False, batch_size=4, seed=0)
    run_id = ws.create_run(params.to_dict(), ws.images("ok")["id"].to_numpy())
    yield ws, run_id, ModelSpec(model["name"], checkpoint=model["checkpoint"])
    ws.close()


def run_again(ws: Workspace, run_id: int) -> dict:
    """What "Run again" does, computed in this process: the run back to pending, then its job."""
    assert ws.run(run_id)["status"] == "interrupted"
    ws.set_run_status(run_id, "pending")
    assert job.run_job(ws.path, run_id) == "done", ws.run(run_id)["error"]
    return {s["stage"]: s for s in jobs.read_stages(ws, run_id)}


def assert_no_result(ws: Workspace, run_id: int) -> None:
    run = ws.run(run_id)
    assert run["status"] == "interrupted" and run["n_clusters"] is None
    assert ws.run_assignments(run_id).empty and ws.run_anchors(run_id) == []
    with pytest.raises(Exception, match="only a finished run can be reviewed"):
        ReviewSession(ws, run_id)


def test_job_killed_while_embedding_keeps_finished_batches_and_resumes(tmp_path, job_workspace):
    ws, run_id, model = job_workspace
    kill_when_ready(JOB_CHILD, ws, run_id, "embedding images", 8, log=tmp_path / "child.log")
    assert_no_result(ws, run_id)
    store = VectorStore(model_cache_dir(model, ws.cache_dir) / "images", model.embed_dim)
    keys = ws.images("ok")["sha256"].tolist()
    kept = 24 - len(store.get_many(keys)[1])
    assert 8 <= kept < 24  # the batches finished before the kill are in the cache

    stages = run_again(ws, run_id)
    assert stages["embedding images"]["first_done"] == kept  # resumed: those were not encoded again
    assert len(ws.run_assignments(run_id)) == 24


@pytest.mark.parametrize("point", [("clustering", 1), ("saving arrays", 2)], ids=["clustering", "saving"])
def test_job_killed_while_clustering_or_saving_leaves_no_half_result(tmp_path, job_workspace, point):
    """Killed in k-means, or after some result arrays were written but before the result was committed: the run
    reads "interrupted" with no result; every embedding is cached, so running it again encodes nothing."""
    ws, run_id, _ = job_workspace
    kill_when_ready(JOB_CHILD, ws, run_id, *point, log=tmp_path / "child.log")
    assert_no_result(ws, run_id)
    arrays = sorted(p.name for p in ws.run_dir(run_id).glob("*.npy"))
    assert len(arrays) == (2 if point[0] == "saving arrays" else 0)

    stages = run_again(ws, run_id)
    for stage in ("embedding images", "embedding vocabulary"):
        assert stages[stage]["first_done"] == stages[stage]["total"], stage  # all from the cache
    assert len(ws.run_assignments(run_id)) == 24
    assert ws.load_run_array(run_id, "image_embeddings").shape == (24, 32)
    assert ReviewSession(ws, run_id).state.labels.shape == (24,)


@pytest.mark.slow
def test_ray_embedding_killed_mid_way_resumes_with_only_what_is_missing(tmp_path, ray_address, elpv_images,
                                                                       tiny_model_config, tiny_checkpoint, tiny_spec):
    """The driver of ``embed --ray``, joined to a running Ray, killed after 2 of 6 batches: the batches it received
    are in the cache and nothing is in OUT; the same command again encodes only the rest, with the same vectors."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = ["embed", "--images", elpv_images, "--model", tiny_model_config, "--checkpoint", tiny_checkpoint,
            "--precision", "fp32", "--cache", cache, "--batch-size", 4, "--out", out, "--ray"]
    child = Child(RAY_EMBED_CHILD, *args, ray_address, log=tmp_path / "child.log")
    child.wait_for()
    child.kill()
    kept = len(VectorStore(model_cache_dir(tiny_spec, cache) / "images", 32))
    assert 8 <= kept < 24 and not out.exists()

    assert cli.main([str(arg) for arg in [*args, "local"]]) == 0  # this session's Ray
    assert json.loads((out / "run.json").read_text())["counts"]["encoded"] == 24 - kept
    paths = sorted(elpv_images.glob("*.png"))
    reference = embed_images(tiny_spec, paths, None, tmp_path / "ref", device="cpu", precision="fp32").embeddings
    assert np.abs(np.load(out / "embeddings.npy") - reference).max() <= 1e-5


# -- export ------------------------------------------------------------------------------------------------
def finished_run(ws: Workspace, n: int = 12) -> tuple[int, np.ndarray]:
    records = tuple(ImageRecord(f"/src/img{i:03d}.png", f"img{i:03d}.png", f"{i:064x}", 10, 4, 4, "ok", "")
                    for i in range(n))
    ids = np.array(ws.add_image_set(ImageSet("/src", records), "folder", "/src").image_ids)
    run_id = ws.create_run({"n_clusters": 3}, ids)
    ws.save_run_result(run_id, ids, np.arange(n) % 3, np.linspace(0.5, 1, n), [[("crack", 0.3)]] * 3)
    return run_id, ids


def test_export_killed_before_its_manifest_is_never_listed_as_an_export(tmp_path):
    ws = create_workspace("export", tmp_path / "data")
    run_id, _ = finished_run(ws)
    child = Child(EXPORT_CHILD, ws.path, run_id, log=tmp_path / "child.log")
    child.wait_for()
    child.kill()
    [orphan] = ws.exports_dir.glob("*.csv")  # written whole (temporary file + rename), but without its manifest
    assert list(ws.exports_dir.glob("*_manifest.json")) == []
    rows = list(csv.DictReader(io.StringIO(orphan.read_text(encoding="utf-8-sig"), newline="")))
    assert len(rows) == 12
    assert not [p for p in ws.exports_dir.iterdir() if p.suffix == ".tmp" and not p.name.startswith(".")]
    result = export_labels(ReviewSession(ws, run_id), ws, run_id)  # the next export gets its own name
    assert result.csv_path != orphan and result.manifest_path.exists() and result.n_rows == 12
    assert [p.name for p in ws.exports_dir.glob("*_manifest.json")] == [result.manifest_path.name]
    ws.close()


# -- review ------------------------------------------------------------------------------------------------
def test_two_review_processes_at_once_one_killed_lose_no_acknowledged_edit(tmp_path):
    ws = create_workspace("review", tmp_path / "data")
    run_id, _ = finished_run(ws)
    a = Child(REVIEW_CHILD, ws.path, run_id, "A", 0, 100_000, log=tmp_path / "a.log")
    b = Child(REVIEW_CHILD, ws.path, run_id, "B", 1, 60, log=tmp_path / "b.log")
    deadline = time.monotonic() + 180
    while (len(a.lines) < 30 or "FINISHED" not in b.lines) and time.monotonic() < deadline:
        a.read_line(0.05)  # both edit at once: B's 60 edits land between A's
        b.read_line(0.05)
    assert a.process.poll() is None, a.log.read_text()[-3000:]  # A is still editing when it is killed
    a.kill()
    assert b.process.wait(timeout=60) == 0, b.log.read_text()[-3000:]
    b.kill()  # B has ended by itself: this only reads what is left of its output
    acknowledged = {tag: [int(x) for x in child.lines if x.isdigit()] for tag, child in (("A", a), ("B", b))}
    assert len(acknowledged["A"]) >= 30 and len(acknowledged["B"]) == 60
    integrity_ok(ws.path)
    ws.close()
    with Workspace(ws.path) as reopened:
        rows = reopened.connection().execute("SELECT id, session FROM events WHERE run_id = ? ORDER BY id",
                                             (run_id,)).fetchall()
        stored = {tag: [i for i, session in rows if session == tag] for tag in ("A", "B")}
        assert stored["B"] == acknowledged["B"]  # every edit, in the order made
        assert stored["A"][:len(acknowledged["A"])] == acknowledged["A"]
        assert len(stored["A"]) - len(acknowledged["A"]) <= 1  # at most one committed but not yet printed
        session = ReviewSession(reopened, run_id)  # the log replays: sessions never saw a corrupt state
        assert session.edit_count == len(rows)
        assert session.state.names[1] == "B 57"
        last_a = max(i for i in range(len(stored["A"])) if i % 3 == 0)
        assert session.state.names[0] == f"A {last_a}"
        session.rename(2, "after the crash")


def test_two_browser_sessions_edit_one_vocabulary_set(app_data):
    ws = create_workspace("vocab", app_data)

    first, second = (open_app("pages/vocabulary.py", ws) for _ in range(2))  # both drawn before either edits
    for at, term in ((first, "alpha"), (second, "beta"), (first, "gamma")):
        next(t for t in at.text_input if t.label == "Domain term").input(term)
        next(b for b in at.button if b.label == "Add domain term").click()
        at.run()
        assert not at.exception and not at.error, [e.value for e in at.error]
    assert [t["term"] for t in ws.load_vocab_set("default")["domain_terms"]] == ["alpha", "beta", "gamma"]
    ws.close()


def test_two_sessions_adding_images_at_once_get_every_image_once(tmp_path):
    ws = create_workspace("adds", tmp_path / "data")
    shared = [(f"s{i}.png", encode(pattern((20, 20), 500 + i), "PNG")) for i in range(20)]
    own = {tag: [(f"{tag}{i}.png", encode(pattern((20, 20), 600 + 40 * n + i), "PNG")) for i in range(20)]
           for n, tag in enumerate("ab")}
    reports, errors = {}, []

    def add(tag: str) -> None:
        try:
            reports[tag] = ingest.add_uploads(ws, shared + own[tag])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(tag,)) for tag in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(r.added for r in reports.values()) == [20, 40]  # whoever stored first got the shared images
    assert sum(r.duplicates for r in reports.values()) == 20
    assert ws.image_counts() == {"ok": 60, "skipped": 0, "duplicate": 20, "total": 80}
    assert ws.images("ok")["sha256"].is_unique
    integrity_ok(ws.path)
    ws.close()
