"""Export: rows and columns, verified-only, excluded images, formula injection, manifest, atomic writes."""
from __future__ import annotations

import csv
import hashlib
import io
import json

import numpy as np
import pytest

from tac_core import atomic
from tac_core.errors import InvalidInputError
from tac_core.workspace.export import (COLUMNS, export_labels, list_exports, neutralise, skipped_files,
                                       skipped_files_csv)
from tac_core.inputs.imageset import ImageRecord, ImageSet
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import create_workspace

REL_PATHS = ["a/ok.png", "=HYPERLINK(\"http://x\")", "+1.png", "-2.png", "@SUM(A1).png", "\tx.png", "\rx.png",
             "ünï 工場.png"]
LABELS = [0, 0, 0, 1, 1, 1, 2, 2]
ANCHORS = [[("crack", 0.314), ("scratch", 0.29), ("dent", 0.27), ("stain", 0.1)], [("-minus", 0.2)], []]


@pytest.fixture
def ws(tmp_path):
    workspace = create_workspace("export", tmp_path)
    yield workspace
    workspace.close()


@pytest.fixture
def run(ws):
    records = tuple(ImageRecord(f"/src/{rel}", rel, hashlib.sha256(rel.encode()).hexdigest(), 10, 4, 4, "ok", "")
                    for rel in REL_PATHS)
    ids = np.array(ws.add_image_set(ImageSet("/src", records), "folder", "/src").image_ids)
    run_id = ws.create_run({"n_clusters": 3, "mode": "free", "seed": 7}, ids)
    ws.save_run_result(run_id, ids, LABELS, np.linspace(0.5, 0.9, 8), ANCHORS)
    return run_id, ids


@pytest.fixture
def session(ws, run):
    return ReviewSession(ws, run[0])


def read_rows(result) -> list[dict]:
    text = result.csv_path.read_bytes().decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_neutralise():
    assert [neutralise(t) for t in ("=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "plain", "a=b", "")] == \
           ["'=1+1", "'+1", "'-2", "'@SUM(A1)", "'\tx", "'\rx", "plain", "a=b", ""]


def test_rows_columns_and_files(ws, run, session):
    run_id, ids = run
    result = export_labels(session, ws, run_id)
    assert result.csv_path.parent == ws.exports_dir and result.manifest_path.parent == ws.exports_dir
    assert result.csv_path.name.startswith(f"labels_run{run_id}_") and result.csv_path.suffix == ".csv"
    assert result.manifest_path.name == result.csv_path.stem + "_manifest.json"
    data = result.csv_path.read_bytes()
    assert data == result.csv_bytes and data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    rows = read_rows(result)
    assert result.n_rows == len(rows) == 8 and tuple(rows[0]) == COLUMNS
    by_hash = {r["sha256"]: r for r in rows}
    first = by_hash[hashlib.sha256(b"a/ok.png").hexdigest()]
    assert first == {"relative_path": "a/ok.png", "sha256": first["sha256"], "cluster_id": "0", "label": "cluster 0",
                     "verified": "false", "confidence": "0.5000",
                     "top_anchors": "crack (0.31); scratch (0.29); dent (0.27)", "run_id": str(run_id)}
    assert [r["cluster_id"] for r in rows] == sorted(r["cluster_id"] for r in rows)
    assert by_hash[hashlib.sha256("ünï 工場.png".encode()).hexdigest()]["relative_path"] == "ünï 工場.png"


def test_formula_injection_is_neutralised_in_paths_names_and_anchors(ws, run, session):
    run_id, _ = run
    session.rename(0, "=HYPERLINK(\"http://evil\",\"click\")")
    session.rename(1, "+1")
    session.rename(2, "@SUM(A1:A9)")
    rows = read_rows(export_labels(session, ws, run_id))
    paths = {r["relative_path"] for r in rows}
    assert paths == {"a/ok.png", "'=HYPERLINK(\"http://x\")", "'+1.png", "'-2.png", "'@SUM(A1).png", "'\tx.png",
                     "'\rx.png", "ünï 工場.png"}
    assert {r["label"] for r in rows} == {"'=HYPERLINK(\"http://evil\",\"click\")", "'+1", "'@SUM(A1:A9)"}
    assert {r["top_anchors"] for r in rows if r["cluster_id"] == "1"} == {"'-minus (0.20)"}
    for row in rows:
        for column in ("relative_path", "label", "top_anchors"):
            assert not row[column].startswith(("=", "+", "-", "@", "\t", "\r")), row
    assert all(float(r["confidence"]) > 0 for r in rows)  # numbers are untouched


def test_excluded_never_exported_and_verified_only(ws, run, session):
    run_id, ids = run
    session.exclude(ids[[0, 6]])
    session.verify_images(ids[[1, 3]])
    session.verify_cluster(2)
    everything = export_labels(session, ws, run_id)
    assert everything.n_rows == 6
    exported = {r["sha256"] for r in read_rows(everything)}
    assert hashlib.sha256(REL_PATHS[0].encode()).hexdigest() not in exported
    verified = export_labels(session, ws, run_id, verified_only=True)
    rows = read_rows(verified)
    # image 1 and 3 themselves; cluster 2 minus its excluded image 6
    expected = ["'=HYPERLINK(\"http://x\")", "'-2.png", "ünï 工場.png"]
    assert sorted(r["relative_path"] for r in rows) == sorted(expected)
    assert all(r["verified"] == "true" for r in rows)
    assert verified.csv_path.name.endswith("_verified.csv") and verified.csv_path != everything.csv_path
    assert verified.manifest["counts"] == {"rows": 3, "clusters": 3, "verified": 3, "excluded": 2}


def test_manifest(ws, run, session):
    run_id, ids = run
    session.rename(0, "crack")
    session.merge(1, 0)
    session.undo()
    session.exclude(ids[:1])
    result = export_labels(session, ws, run_id)
    manifest = json.loads(result.manifest_path.read_text("utf-8"))
    assert manifest == result.manifest
    assert manifest["run_id"] == run_id and manifest["run_parameters"] == {"n_clusters": 3, "mode": "free", "seed": 7}
    assert manifest["counts"] == {"rows": 7, "clusters": 3, "verified": 0, "excluded": 1}
    assert manifest["edit_count"] == 2  # rename and exclude; the merge was undone
    assert manifest["verified_only"] is False and manifest["columns"] == list(COLUMNS)
    assert manifest["created"].endswith("+00:00") and manifest["tac_core_version"]
    assert manifest["csv_file"] == result.csv_path.name
    assert manifest["csv_sha256"] == hashlib.sha256(result.csv_bytes).hexdigest()
    assert manifest["workspace"] == "export"


def test_a_session_is_refreshed_and_a_state_can_be_exported(ws, run):
    run_id, _ = run
    mine, other = ReviewSession(ws, run_id), ReviewSession(ws, run_id)
    other.rename(2, "from the other session")
    assert "from the other session" in {r["label"] for r in read_rows(export_labels(mine, ws, run_id))}
    rows = read_rows(export_labels(other.state, ws, run_id, dest_dir=ws.path / "elsewhere"))
    assert len(rows) == 8 and (ws.path / "elsewhere").is_dir()


def test_export_of_another_runs_state_is_refused(ws, run, session):
    run_id, ids = run
    other_run = ws.create_run({}, ids[:4])
    ws.save_run_result(other_run, ids[:4], [0, 0, 1, 1], np.ones(4), [[], []])
    with pytest.raises(InvalidInputError, match=f"not of run {other_run}"):
        export_labels(session, ws, other_run)


def test_exports_are_atomic_and_never_overwrite(ws, run, session, monkeypatch):
    run_id, _ = run
    first = export_labels(session, ws, run_id)
    second = export_labels(session, ws, run_id)
    assert first.csv_path != second.csv_path and first.csv_path.exists()
    names = sorted(p.name for p in ws.exports_dir.iterdir())
    assert len(names) == 4 and not [n for n in names if n.startswith(".") or n.endswith(".tmp")]

    def crash(path, data):  # the disk fills up half-way through the CSV
        with atomic.atomic_path(path) as tmp:
            tmp.write_bytes(data[: len(data) // 2])
            raise OSError("No space left on device")

    monkeypatch.setattr(atomic, "write_bytes", crash)
    with pytest.raises(OSError):
        export_labels(session, ws, run_id)
    assert sorted(p.name for p in ws.exports_dir.iterdir()) == names  # nothing half-written, no temp files


def test_list_exports_newest_first_skipping_unreadable_manifests(ws, run, session):
    run_id, _ = run
    assert list_exports(ws) == []
    first = export_labels(session, ws, run_id)
    second = export_labels(session, ws, run_id, verified_only=True)
    (ws.exports_dir / "labels_run9_broken_manifest.json").write_text("{not json", encoding="utf-8")
    assert sorted(list_exports(ws), key=lambda m: m["csv_file"]) == sorted([first.manifest, second.manifest],
                                                                           key=lambda m: m["csv_file"])
    names = [m["csv_file"] for m in list_exports(ws)]
    assert names == sorted(names, reverse=True)


def test_skipped_files_and_their_csv_for_a_spreadsheet(ws, run):
    records = (ImageRecord("/up/=cmd.png", "=cmd.png", "a" * 64, 10, 0, 0, "skipped", "-not an image"),
               ImageRecord("/up/ok.png", "ok.png", "b" * 64, 10, 4, 4, "ok", ""))
    added = ws.add_image_set(ImageSet("/up", records), "upload", "upload 1")
    table = skipped_files(ws)
    assert list(table.columns) == ["file", "status", "reason", "source", "path"]
    assert table.to_dict("records") == [{"file": "=cmd.png", "status": "skipped", "reason": "-not an image",
                                         "source": added.source_id, "path": "/up/=cmd.png"}]
    data = skipped_files_csv(table)
    assert data.startswith("\ufeff".encode("utf-8"))
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows == [{"file": "'=cmd.png", "status": "skipped", "reason": "'-not an image",
                     "source": str(added.source_id), "path": "/up/=cmd.png"}]
