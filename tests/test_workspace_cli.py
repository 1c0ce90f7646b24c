"""``python -m tac_core workspace …``: a CLI-only workflow gives the app's labels, and every verb's output and
errors."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from apptest_helpers import ROOT, open_app
from review_workspace import real_workspace
from tac_core.inputs import vocab_spec
from tac_core.run.cli import main
from tac_core.workspace import ingest
from tac_core.workspace.bundle import write_bundle
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import create_workspace, open_workspace


def cli(*args, data: Path, env=None) -> subprocess.CompletedProcess:
    """The CLI as a nightly script runs it: a real process."""
    return subprocess.run([sys.executable, "-m", "tac_core", "workspace", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TAC_STUDIO_DATA": str(data), **(env or {})})


def read_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def bundle_labels(zip_path: Path) -> tuple[list[dict], dict]:
    with zipfile.ZipFile(zip_path) as archive:
        return (read_csv(archive.read("labels.csv").decode("utf-8-sig")),
                json.loads(archive.read("manifest.json")))


def small_spec() -> dict:
    return {**vocab_spec.default_spec(), "categories": ["noun.shape"], "domain_packs": ["surface_defects"],
            "templates": "photo1"}


def test_a_cli_only_workflow_gives_the_apps_labels(app_data, elpv_images, tiny_model_config, tiny_checkpoint,
                                                   tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TAC_STUDIO_IMAGE_PRECISION", "fp32")  # both sides embed alike on any CPU
    data = tmp_path / "cli"

    def verb(*args) -> str:
        assert main(["workspace", *map(str, args), "--data", str(data)]) == 0
        return capsys.readouterr().out

    assert Path(verb("create", "Line 3").strip()).parent == data
    verb("add", "Line 3", elpv_images)
    verb("vocab", "Line 3", "small", "--categories", "noun.shape", "--packs", "surface_defects", "--templates",
         "photo1")
    done = cli("run", "Line 3", "--k", 3, "--seed", 5, "--model", tiny_model_config, "--checkpoint", tiny_checkpoint,
               "--vocab-set", "small", "--map", "pca", "--no-suggest-k", data=data,
               env={"TAC_STUDIO_IMAGE_PRECISION": "fp32"})  # the job in a process of its own, as at night
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1" and "clustering: 100/100" in done.stderr
    runs = read_csv(verb("runs", "Line 3"))
    assert [(r["id"], r["status"], r["n_clusters"], r["seed"], r["vocab_set"]) for r in runs] == \
           [("1", "done", "3", "5", "small")]
    cli_rows, cli_manifest = bundle_labels(Path(verb("export", "Line 3", "--zip").strip()))

    # the app: the same images and vocabulary set, the run started on the Cluster page, the bundle on Export
    workspace = create_workspace("Line 3", app_data)
    ingest.add_folder(workspace, elpv_images)
    workspace.save_vocab_set("small", small_spec())
    at = open_app("pages/cluster.py", workspace, timeout=300)
    at.text_input(key="w_model_name").input(str(tiny_model_config))
    at.text_input(key="w_model_checkpoint").input(str(tiny_checkpoint))
    at.selectbox(key="cluster_vocab_set").set_value("small")
    at.number_input(key="w_k").set_value(3)
    at.number_input(key="cluster_seed").set_value(5)
    at.radio(key="cluster_layout").set_value("pca")
    at.checkbox(key="cluster_suggest").uncheck()
    at.run()
    next(b for b in at.button if b.label == "Start run").click().run()
    assert workspace.runs()["status"].tolist() == ["done"], workspace.runs()["error"].tolist()
    at.switch_page("pages/export.py").run()
    next(b for b in at.button if b.label == "Create bundle").click().run()
    assert not at.exception, at.exception
    assert [d.label for d in at.get("download_button")] == ["Download bundle"]
    [app_zip] = workspace.exports_dir.glob("bundle_run1_*.zip")
    app_rows, app_manifest = bundle_labels(app_zip)

    assert cli_manifest["run"]["parameters"] == app_manifest["run"]["parameters"]  # one run description
    assert cli_manifest["vocabulary"] == app_manifest["vocabulary"] and cli_manifest["model"] == app_manifest["model"]
    assert len(cli_rows) == len(app_rows) == 24
    for mine, theirs in zip(cli_rows, app_rows):
        assert abs(float(mine.pop("confidence")) - float(theirs.pop("confidence"))) < 1e-3
        assert mine == theirs


def test_history_lists_every_event_with_clusters_images_and_undone(tmp_path, elpv_images, capsys):
    workspace, run_id, ids = real_workspace(tmp_path / "data", elpv_images)  # clusters 0, 1, 2 of 9, 8, 7
    session = ReviewSession(workspace, run_id, session_id="night shift")
    session.rename(0, "=cmd")
    session.move(ids[[0, 1]], 2)  # positions 0 and 1 are in clusters 0 and 1
    session.merge(1, 2)
    session.undo()
    assert main(["workspace", "history", str(workspace.path)]) == 0
    rows = read_csv(capsys.readouterr().out)
    assert list(rows[0]) == ["event_id", "time", "session", "user", "action", "clusters", "images", "undone",
                             "description"]
    assert [(r["action"], r["clusters"], r["images"], r["undone"]) for r in rows] == [
        ("rename", "0", "0", "false"), ("move", "0; 1; 2", "2", "false"), ("merge", "1; 2", "7", "true"),
        ("undo", "1; 2", "7", "false")]
    assert {r["session"] for r in rows} == {"night shift"} and {r["user"] for r in rows} == {workspace.user.name}
    assert rows[0]["time"].endswith("+00:00") and "'=cmd'" in rows[0]["description"]


def test_runs_export_and_verify_from_the_command_line(tmp_path, elpv_images, capsys):
    workspace, run_id, _ = real_workspace(tmp_path / "data", elpv_images)
    ReviewSession(workspace, run_id).rename(1, "+1 crack")
    assert main(["workspace", "runs", "review test", "--data", str(tmp_path / "data")]) == 0
    [run] = read_csv(capsys.readouterr().out)
    assert (run["id"], run["status"], run["n_images"], run["n_clusters"], run["mode"]) == ("1", "done", "24", "3",
                                                                                         "free")
    out = tmp_path / "bundles"
    assert main(["workspace", "export", str(workspace.path), "--out", str(out), "--tree", "--coco", "--clusters",
                 "1,2"]) == 0
    printed = capsys.readouterr()
    bundle = Path(printed.out.strip())
    assert bundle.parent == out and (bundle / "coco.json").is_file() and (bundle / "images" / "+1 crack").is_dir()
    assert "exported 15 rows (0 of them duplicates) of run 1" in printed.err
    assert main(["workspace", "verify", str(bundle), "--workspace", str(workspace.path)]) == 0
    assert "matches its manifest (its files and the event log)" in capsys.readouterr().err
    (bundle / "coco.json").write_text("{}")
    assert main(["workspace", "verify", str(bundle)]) == 1
    assert "mismatch: coco.json has changed" in capsys.readouterr().err


def test_add_takes_folders_zips_and_files_naming_no_server_folder(tmp_path, elpv_images, capsys):
    workspace = create_workspace("adds", tmp_path / "data")
    images = sorted(elpv_images.glob("*.png"))
    archive = tmp_path / "batch 7.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in images[:3]:
            zf.write(path, f"line/{path.name}")
    assert main(["workspace", "add", str(workspace.path), str(archive), str(images[3]), str(elpv_images)]) == 0
    messages = capsys.readouterr().err
    assert "batch 7.zip: 3 new image(s)" in messages and "20 new image(s), 4 duplicate(s)" in messages
    sources = workspace.sources()
    assert sources["kind"].tolist() == ["zip", "upload", "path"]
    assert sources["location"].tolist()[:2] == ["batch 7.zip", images[3].name]
    ids = workspace.images("ok")["id"].to_numpy()
    run_id = workspace.create_run({"n_clusters": 2}, ids)
    workspace.save_run_result(run_id, ids, [0, 1] * 12, [0.5] * 24, [[], []])
    result = write_bundle(ReviewSession(workspace, run_id))
    rows = read_csv((result.path / "labels.csv").read_text("utf-8-sig"))
    assert len(rows) == 24 + 4 and {r["source"] for r in rows} == {"1: batch 7.zip", f"2: {images[3].name}",
                                                                   f"3: {elpv_images.name}"}
    workspace.close()


def test_vocab_saves_a_set_the_run_verb_uses(tmp_path, capsys):
    workspace = create_workspace("vocab", tmp_path / "data")
    terms = tmp_path / "terms.csv"
    terms.write_text("term,note\nhairline crack,thin line\nsolder bridge,\n")
    assert main(["workspace", "vocab", str(workspace.path), "ours", "--no-wordnet", "--terms", str(terms),
                 "--templates", "tac3"]) == 0
    spec = workspace.load_vocab_set("ours")
    assert spec["wordnet"] is False and spec["templates"] == "tac3"
    assert [t["term"] for t in spec["domain_terms"]] == ["hairline crack", "solder bridge"]
    assert "saved vocabulary set 'ours' (version 1)" in capsys.readouterr().err
    assert main(["workspace", "vocab", str(workspace.path), "bad", "--categories", "noun.nothing"]) == 2
    assert "error: unknown WordNet category" in capsys.readouterr().err
    workspace.close()


@pytest.mark.parametrize("args,message", [
    (["run", "{ws}", "--k", "1"], "--k (the clusters) must be at least 2; got 1"),
    (["run", "{ws}"], "give the number of clusters with --k"),
    (["run", "{ws}", "--k", "30"], "K = 30 is more than the 24 usable images"),
    (["run", "{ws}", "--k", "3", "--vocab-set", "nothing"], "no vocabulary set named 'nothing'"),
    (["run", "{ws}", "--like", "9"], "run 9"),
    (["export", "{empty}"], "has no finished run yet"),
    (["history", "no such workspace"], "there is no workspace 'no such workspace'"),
    (["add", "{ws}", "/no/such/folder"], "neither a folder nor a file"),
    (["verify", "{ws}"], "no readable manifest.json"),
])
def test_bad_input_gives_one_line_and_exit_2(args, message, tmp_path, elpv_images, capsys):
    workspace, _, _ = real_workspace(tmp_path / "data", elpv_images)
    empty = create_workspace("empty", tmp_path / "data")
    names = {"{ws}": str(workspace.path), "{empty}": str(empty.path)}
    assert main(["workspace", *(names.get(a, a) for a in args), "--data", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err, err
    assert err.count("\n") == 1
    workspace.close()
    empty.close()
    with open_workspace(workspace.path) as reopened:
        assert len(reopened.runs()) == 1  # a refused run leaves no run behind
