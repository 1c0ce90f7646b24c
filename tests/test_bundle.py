"""Export bundle: labels.csv with duplicates, the manifest and its verification, the folder tree through
torchvision's ImageFolder, Label Studio and COCO files parsed back, no server paths, atomic writes."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from review_workspace import real_workspace
from tac_core import atomic
from tac_core.errors import InvalidInputError
from tac_core.inputs.imageset import scan_folder
from tac_core.inputs.vocab_spec import build_vocabulary, default_spec
from tac_core.workspace import bundle as bundle_module
from tac_core.workspace.bundle import BUNDLE_COLUMNS, BundleOptions, write_bundle
from tac_core.workspace.export import COLUMNS, export_labels
from tac_core.workspace.manifest import verify_bundle
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.runs import SUMMARY_FILE

DUPLICATES = {"=evil.png": 0, "copy of first.png": 0, "sub/again.png": 5}  # new name -> position of the original


@pytest.fixture
def reviewed(tmp_path, elpv_images):
    """24 real images in 3 clusters, then a second source holding byte-identical copies of two of them."""
    workspace, run_id, ids = real_workspace(tmp_path / "data", elpv_images)
    originals = sorted(elpv_images.glob("*.png"))
    copies = tmp_path / "line 2"
    for name, position in DUPLICATES.items():
        (copies / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(originals[position], copies / name)
    added = workspace.add_image_set(scan_folder(copies), "path", str(copies))
    assert added.duplicates == len(DUPLICATES) and not added.image_ids
    yield workspace, ReviewSession(workspace, run_id), ids, copies
    workspace.close()


def rows_of(data: bytes) -> list[dict]:
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def bundle_file(result, name: str) -> bytes:
    if result.path.is_dir():
        return (result.path / name).read_bytes()
    with zipfile.ZipFile(result.path) as archive:
        return archive.read(name)


def test_every_file_gets_a_label_and_duplicates_carry_their_originals(reviewed, elpv_images):
    workspace, session, ids, _ = reviewed
    session.rename(0, "crack")
    session.verify_cluster(0)
    result = write_bundle(session)
    rows = rows_of(bundle_file(result, "labels.csv"))
    assert list(rows[0]) == list(BUNDLE_COLUMNS) and BUNDLE_COLUMNS[:len(COLUMNS)] == COLUMNS
    assert len(rows) == result.n_rows == 24 + 3 and result.n_duplicates == 3
    by_path = {row["relative_path"]: row for row in rows}
    first = sorted(p.name for p in elpv_images.glob("*.png"))
    for name, position in DUPLICATES.items():
        copy, original = by_path["'" + name if name.startswith("=") else name], by_path[first[position]]
        assert copy["duplicate_of"] == first[position] and original["duplicate_of"] == ""
        for column in ("sha256", "cluster_id", "label", "verified", "confidence", "top_anchors", "run_id"):
            assert copy[column] == original[column], column
        assert copy["source"] == "2: line 2" and original["source"] == f"1: {elpv_images.name}"
    assert by_path[first[0]]["label"] == "crack" and by_path["'=evil.png"]["verified"] == "true"
    # the originals' rows are the plain export's rows, column for column
    plain = rows_of(export_labels(session, workspace, session.run_id, dest_dir=workspace.path / "plain").csv_bytes)
    assert [{c: r[c] for c in COLUMNS} for r in rows if not r["duplicate_of"]] == plain

    session.exclude(ids[[0]])  # an excluded original takes its duplicates along
    rows = rows_of(bundle_file(write_bundle(session), "labels.csv"))
    assert len(rows) == 23 + 1 and {r["duplicate_of"] for r in rows} == {"", first[5]}


def test_the_manifest_verifies_and_says_what_made_the_labels(reviewed):
    workspace, session, ids, _ = reviewed
    session.rename(1, "scratch")
    session.move(ids[[3, 4]], 2)
    session.undo()
    result = write_bundle(session, BundleOptions(label_studio=True, coco=True, as_zip=True))
    assert result.path.suffix == ".zip" and verify_bundle(result.path, workspace) == []
    manifest = json.loads(bundle_file(result, "manifest.json"))
    assert manifest == json.loads(json.dumps(result.manifest))
    assert manifest["format"] == "tac-studio-bundle" and manifest["approvals"] == []
    assert manifest["app"]["version"] and manifest["workspace"] == "review test"
    assert manifest["run"]["id"] == session.run_id and manifest["run"]["parameters"] == {"n_clusters": 3,
                                                                                        "mode": "free"}
    assert manifest["review"]["events_applied"] == 3 and manifest["review"]["edits_in_effect"] == 1
    assert set(manifest["files"]) == {"labels.csv", "label_studio.json", "label_studio_config.xml", "coco.json"}
    assert manifest["files"]["labels.csv"] == hashlib.sha256(bundle_file(result, "labels.csv")).hexdigest()
    assert manifest["counts"] == {"rows": 27, "images": 24, "duplicates": 3, "clusters": 3, "verified": 0,
                                  "excluded": 0}

    session.verify_images(ids[[0]])  # a later edit is not part of this export: it still verifies
    assert verify_bundle(result.path, workspace) == []
    with workspace.transaction() as conn:  # someone rewrites history in the database
        conn.execute("UPDATE events SET payload = '{\"cluster\": 1, \"name\": \"dent\"}' WHERE id = 1")
    assert [p for p in verify_bundle(result.path, workspace) if "event log" in p]
    folder = write_bundle(session)
    (folder.path / "labels.csv").write_bytes(bundle_file(folder, "labels.csv").replace(b"scratch", b"dent"))
    [problem] = verify_bundle(folder.path)
    assert problem.startswith("labels.csv has changed")
    with pytest.raises(InvalidInputError, match="no readable manifest.json"):
        verify_bundle(workspace.exports_dir)


def test_the_manifest_changes_with_every_decision(reviewed):
    _, session, ids, _ = reviewed
    seen = []

    def fingerprint() -> tuple[str, str]:
        manifest = write_bundle(session).manifest
        return manifest["files"]["labels.csv"], manifest["review"]["event_log"]["sha256"]

    seen.append(fingerprint())
    for edit in (lambda: session.rename(0, "crack"), lambda: session.move(ids[[1]], 0),
                 lambda: session.verify_images(ids[[2]]), lambda: session.verify_cluster(1),
                 lambda: session.exclude(ids[[3]]), lambda: session.merge(2, 1), lambda: session.undo()):
        edit()
        seen.append(fingerprint())
    assert len({labels for labels, _ in seen}) == len(seen) - 1  # the undo brings back the labels before the merge
    assert seen[-1][0] == seen[-3][0] and len({log for _, log in seen}) == len(seen)  # ... but not the log


def test_the_folder_tree_loads_with_imagefolder_and_yields_the_labels(reviewed):
    from torchvision.datasets import ImageFolder

    _, session, _, _ = reviewed
    for cluster, name in enumerate(["crack/scratch", "Crack", "crack"]):  # a slash, and one name in two cases
        session.rename(cluster, name)
    result = write_bundle(session, BundleOptions(folder_tree=True))
    rows = rows_of(bundle_file(result, "labels.csv"))
    label_of = {row["sha256"]: row["label"] for row in rows}
    folders = {c["folder"]: c["label"] for c in result.manifest["classes"]}
    assert set(folders) == {"crack_scratch", "Crack", "crack (2)"}
    dataset = ImageFolder(str(result.path / "images"))
    assert len(dataset) == 24  # every distinct image once; duplicates are the same bytes
    for path, class_index in dataset.samples:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        assert folders[dataset.classes[class_index]] == label_of[digest]
    tree = result.manifest["tree"]
    assert tree["hard_linked"] + tree["copied"] == tree["files"] == 24 and tree["missing"] == []
    assert tree["hard_linked"] == 24 and os.stat(dataset.samples[0][0]).st_nlink > 1  # no copy where links work


def test_a_file_system_without_links_gets_copies_and_a_vanished_file_is_listed(reviewed, monkeypatch, tmp_path):
    workspace, session, _, _ = reviewed

    def refuse(*_):
        raise OSError("links are not supported here")

    gone = workspace.images("ok")["path"].iloc[0]
    moved = tmp_path / "moved.png"
    shutil.move(gone, moved)
    monkeypatch.setattr(os, "link", refuse)
    try:
        tree = write_bundle(session, BundleOptions(folder_tree=True)).manifest["tree"]
    finally:
        shutil.move(moved, gone)
    assert tree["hard_linked"] == 0 and tree["copied"] == 23 and tree["missing"] == [Path(gone).name]


def test_label_studio_and_coco_parse_back_to_the_labels(reviewed):
    _, session, ids, _ = reviewed
    session.rename(0, "=1+1 edge")  # JSON holds the name as typed; only CSV cells get the quote
    session.verify_cluster(0)
    session.verify_images(ids[[1]])
    result = write_bundle(session, BundleOptions(label_studio=True, coco=True, folder_tree=True))
    rows = [r for r in rows_of(bundle_file(result, "labels.csv")) if not r["duplicate_of"]]
    expected = {r["sha256"]: (r["label"][1:] if r["label"].startswith("'=") else r["label"], r["verified"] == "true")
                for r in rows}

    tasks = json.loads(bundle_file(result, "label_studio.json"))
    assert len(tasks) == 24
    for task in tasks:
        decided = task.get("annotations") or task["predictions"]
        [choice] = decided[0]["result"]
        assert (choice["from_name"], choice["to_name"], choice["type"]) == ("label", "image", "choices")
        assert (choice["value"]["choices"][0], "annotations" in task) == expected[task["data"]["sha256"]]
        assert (result.path / task["data"]["image"]).is_file()
    config = bundle_file(result, "label_studio_config.xml").decode()
    assert '<Choice value="=1+1 edge"/>' in config and 'toName="image"' in config

    coco = json.loads(bundle_file(result, "coco.json"))
    category = {c["id"]: c["name"] for c in coco["categories"]}
    image = {i["id"]: i for i in coco["images"]}
    assert len(coco["annotations"]) == len(image) == 24 and sorted(category) == [1, 2, 3]
    for annotation in coco["annotations"]:
        entry = image[annotation["image_id"]]
        assert (category[annotation["category_id"]], annotation["verified"]) == expected[entry["sha256"]]
        assert entry["width"] == entry["height"] == 300 and (result.path / entry["file_name"]).is_file()


def test_no_bundle_file_names_a_server_path_and_csv_cells_stay_formula_safe(reviewed, elpv_images, tmp_path):
    workspace, session, _, copies = reviewed
    model = {"name": str(tmp_path / "models" / "tiny_clip.json"), "pretrained": "openai",
             "checkpoint": str(tmp_path / "models" / "weights.pt")}
    spec = {**default_spec(), "wordnet": False, "domain_packs": ["surface_defects"]}
    images = workspace.images("ok")["id"].to_numpy()
    run_id = workspace.create_run({"n_clusters": 2, "model": model, "vocab_set": "defects", "vocab_spec": spec,
                                   "seed": 4}, images)
    workspace.save_run_result(run_id, images, np.arange(24) % 2, np.full(24, 0.5), [[("=cmd", 0.3)], []],
                              cluster_names=["+42", "@SUM(A1)"])
    weights = "ab" * 32
    atomic.write_json(workspace.run_dir(run_id) / SUMMARY_FILE,
                      {"model_identity": f"tiny_clip[config 0123]:sha256-{weights}"})
    result = write_bundle(ReviewSession(workspace, run_id), BundleOptions(folder_tree=True, label_studio=True,
                                                                          coco=True, as_zip=True))
    manifest = result.manifest
    assert manifest["model"] == {"name": "tiny_clip.json", "pretrained": "openai", "checkpoint": "weights.pt",
                                 "identity": f"tiny_clip[config 0123]:sha256-{weights}", "weights_sha256": weights}
    assert manifest["run"]["parameters"]["model"] == {"name": "tiny_clip.json", "pretrained": "openai",
                                                      "checkpoint": "weights.pt"}
    assert manifest["run"]["seed"] == 4 and manifest["vocabulary"]["set"] == "defects"
    assert manifest["vocabulary"]["terms_sha256"] == build_vocabulary(spec).fingerprint()  # no summary fact: computed
    with zipfile.ZipFile(result.path) as archive:
        files = {name: archive.read(name) for name in archive.namelist() if name.endswith((".csv", ".json", ".xml"))}
    assert set(files) == {"labels.csv", "manifest.json", "label_studio.json", "label_studio_config.xml", "coco.json"}
    for name, data in files.items():
        for server_path in (tmp_path, workspace.path, elpv_images, copies):
            assert str(server_path) not in data.decode("utf-8-sig"), name
    rows = rows_of(files["labels.csv"])
    for row in rows:
        assert not any(row[c].startswith(("=", "+", "-", "@", "\t", "\r")) for c in row), row
    assert {row["label"] for row in rows} == {"'+42", "'@SUM(A1)"} and "'=evil.png" in {r["relative_path"] for r in rows}


def test_rows_can_be_limited_to_clusters_and_to_verified_images(reviewed):
    _, session, ids, _ = reviewed
    session.verify_images(ids[[0, 1]])  # position 0 is cluster 0 and has two duplicates
    only = write_bundle(session, BundleOptions(clusters=(1,)))
    assert {r["cluster_id"] for r in rows_of(bundle_file(only, "labels.csv"))} == {"1"}
    assert only.manifest["selection"] == {"verified_only": False, "approved_only": False, "clusters": [1]}
    verified = write_bundle(session, BundleOptions(verified_only=True))
    rows = rows_of(bundle_file(verified, "labels.csv"))
    assert len(rows) == 2 + 2 and {r["verified"] for r in rows} == {"true"}
    assert verified.path.name.endswith("_verified")


def test_a_failed_bundle_leaves_nothing_behind(reviewed, monkeypatch):
    workspace, session, _, _ = reviewed
    first = write_bundle(session, BundleOptions(as_zip=True))

    def disk_full(*_args, **_kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(bundle_module, "coco_classification", disk_full)
    for as_zip in (False, True):
        with pytest.raises(OSError, match="No space"):
            write_bundle(session, BundleOptions(coco=True, folder_tree=True, as_zip=as_zip))
    assert [p.name for p in workspace.exports_dir.iterdir()] == [first.path.name]  # no partial, no reservation
    second = write_bundle(session, BundleOptions(as_zip=True))
    assert second.path != first.path and second.path.is_file() and first.path.is_file()
