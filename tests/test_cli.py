"""``python -m tac_core cluster``: both input forms, every output file, and one-line error exits."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tac_core.run.cli import main
from tac_core.cluster.synthetic import make_clip_like_bed
from tac_core.cluster.tac import TAC

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, env=None):
    """The CLI as a user runs it: a real process, so exit codes and stderr are what a shell sees."""
    return subprocess.run([sys.executable, "-m", "tac_core", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def embedding_files(tmp_path_factory):
    bed = make_clip_like_bed(n_samples=600, n_classes=4, dim=32, n_distractor_nouns=300, random_state=1)
    folder = tmp_path_factory.mktemp("embeddings")
    np.save(folder / "X.npy", bed.image_embeddings)
    np.save(folder / "V.npy", bed.vocab_embeddings)
    (folder / "names.txt").write_text("\n".join(bed.vocab_names) + "\n")
    return folder, bed


def test_embeddings_form_writes_every_output(embedding_files, tmp_path):
    folder, bed = embedding_files
    out = tmp_path / "out"
    assert main(["cluster", "--image-embeddings", str(folder / "X.npy"), "--vocab-embeddings",
                 str(folder / "V.npy"), "--vocab", str(folder / "names.txt"), "--k", "4", "--seed", "3",
                 "--out", str(out)]) == 0
    assignments = pd.read_csv(out / "assignments.csv")
    assert list(assignments.columns) == ["index", "cluster", "confidence"]
    assert assignments["index"].tolist() == list(range(600))
    assert set(assignments["cluster"]) == {0, 1, 2, 3}
    direct = TAC(4, random_state=3).fit(bed.image_embeddings, bed.vocab_embeddings)  # what the CLI must run
    np.testing.assert_array_equal(assignments["cluster"].to_numpy(), direct.labels_)

    anchors = pd.read_csv(out / "anchors.csv")
    assert list(anchors.columns) == ["cluster", "rank", "term", "score"]
    assert set(anchors["cluster"]) == {0, 1, 2, 3} and anchors["rank"].min() == 1
    assert anchors["term"].isin(bed.vocab_names).all()

    selected = (out / "selected_vocab.txt").read_text().splitlines()
    assert 0 < len(selected) <= 5 * 30 and set(selected) <= set(bed.vocab_names)
    counterparts = np.load(out / "counterparts.npy")
    assert counterparts.shape == (600, 32)
    np.testing.assert_allclose(np.linalg.norm(counterparts, axis=1), 1, atol=1e-5)

    run = json.loads((out / "run.json").read_text())
    assert run["params"]["n_clusters"] == 4 and run["params"]["seed"] == 3 and run["params"]["mode"] == "free"
    assert {"tac_select_nouns", "tac_cluster", "write_outputs"} <= set(run["seconds"])
    assert {"torch", "numpy", "tac_core"} <= set(run["versions"])
    assert sum(run["cluster_sizes"]) == 600
    audit = pd.read_csv(out / "audit.csv")  # no path column without image files
    assert list(audit.columns[:3]) == ["index", "rank", "score"] and sorted(audit["index"]) == list(range(600))


@pytest.mark.slow
def test_images_form_with_the_tiny_model(elpv_images, tiny_model_config, tiny_checkpoint, tmp_path):
    terms = tmp_path / "terms.csv"
    terms.write_text("term,note\ncrack,a line fracture\nsolder bridge,unwanted joint\ndark area,inactive cell part\n")
    out = tmp_path / "out"
    result = run_cli("cluster", "--images", elpv_images, "--model", tiny_model_config, "--checkpoint",
                     tiny_checkpoint, "--vocab-categories", "noun.shape,noun.motive", "--vocab-extra", terms,
                     "--k", 3, "--mode", "trained", "--epochs", 2, "--balance", "uniform", "--cache",
                     tmp_path / "cache", "--out", out,
                     # fp32 on every CPU and equal sizes: the anchor check below depends on which few nouns the
                     # random model selects and how its 24 images split (with estimated sizes: 12 / 1 / 11)
                     env={"TAC_STUDIO_IMAGE_PRECISION": "fp32"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "WARNING" not in result.stderr
    assignments = pd.read_csv(out / "assignments.csv")
    assert list(assignments.columns) == ["index", "path", "cluster", "confidence"]
    assert sorted(Path(p).name for p in assignments["path"]) == sorted(p.name for p in elpv_images.iterdir())
    assert ((assignments["confidence"] > 0) & (assignments["confidence"] <= 1)).all()
    anchors = pd.read_csv(out / "anchors.csv")
    # domain terms always compete: with the few nouns a random tiny model selects here, they reach the top 10
    assert {"crack", "solder bridge", "dark area"} <= set(anchors["term"])
    run = json.loads((out / "run.json").read_text())
    assert run["params"]["mode"] == "trained" and run["params"]["model"]["checkpoint"] == str(tiny_checkpoint)
    assert run["params"]["balance"] == "uniform"
    assert {"scan_images", "embed_images", "embed_vocabulary", "tac_train"} <= set(run["seconds"])
    assert pd.read_csv(out / "skipped.csv").empty


@pytest.mark.slow
def test_random_weights_warn_loudly(elpv_images, tmp_path):
    terms = tmp_path / "terms.txt"
    terms.write_text("crack\nscratch\nstain\n")
    result = run_cli("cluster", "--images", elpv_images, "--model", "ViT-B-32", "--pretrained", "none",
                     "--vocab", terms, "--k", 2, "--cache", tmp_path / "cache", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "RANDOM weights" in result.stderr and "mean nothing" in result.stderr


@pytest.mark.parametrize("args,message", [
    ([], "required"),
    (["cluster", "--k", "3", "--out", "o"], "either --images"),
    (["cluster", "--images", "x", "--image-embeddings", "x.npy", "--k", "3", "--out", "o"], "exactly one"),
    (["cluster", "--image-embeddings", "X.npy", "--k", "3", "--out", "o"], "--vocab-embeddings and --vocab"),
    (["cluster", "--images", "/no/such/folder", "--model", "{config}", "--pretrained", "none", "--k", "3",
      "--out", "o", "--vocab", "{terms}"], "not a folder"),
    (["cluster", "--image-embeddings", "{X}", "--vocab-embeddings", "{V}", "--vocab", "{terms}", "--k", "3",
      "--out", "o"], "names but"),
    (["cluster", "--image-embeddings", "{bad}", "--vocab-embeddings", "{V}", "--vocab", "{names}", "--k", "3",
      "--out", "o"], "not a readable .npy"),
    (["cluster", "--image-embeddings", "{X}", "--vocab-embeddings", "{V}", "--vocab", "{names}", "--k", "9999",
      "--out", "o"], "larger than the number of images"),
    (["cluster", "--image-embeddings", "{X}", "--vocab-embeddings", "{V}", "--vocab", "{names}", "--k", "1",
      "--out", "o"], "at least 2"),
    (["cluster", "--image-embeddings", "{X}", "--vocab-embeddings", "{V}", "--vocab", "{names}", "--k", "three",
      "--out", "o"], "invalid int value"),
    (["cluster", "--image-embeddings", "{X}", "--vocab-embeddings", "{V}", "--vocab", "{names}", "--k", "3",
      "--mode", "magic", "--out", "o"], "invalid choice"),
    (["cluster", "--images", "{elpv}", "--model", "{config}", "--checkpoint", "/no/such/weights.pt", "--vocab",
      "{terms}", "--k", "2", "--out", "o"], "/no/such/weights.pt"),
])
def test_bad_arguments_give_one_line_and_exit_2(args, message, embedding_files, elpv_images, tiny_model_config,
                                               tmp_path, capsys):
    folder, _ = embedding_files
    (tmp_path / "bad.npy").write_text("not numpy")
    (tmp_path / "terms.txt").write_text("crack\n")
    values = {"X": folder / "X.npy", "V": folder / "V.npy", "names": folder / "names.txt",
              "terms": tmp_path / "terms.txt", "bad": tmp_path / "bad.npy", "elpv": elpv_images,
              "config": tiny_model_config}
    args = [a.format(**values) if a.startswith("{") else a for a in args]
    args = [str(tmp_path / a) if a == "o" else a for a in args]
    assert main(args) == 2
    stderr = capsys.readouterr().err
    assert message in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert not (tmp_path / "o").exists()  # nothing half-written


@pytest.mark.slow
def test_a_real_process_exits_2_without_traceback(tmp_path):
    result = run_cli("cluster", "--k", "3", "--out", tmp_path / "o")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: give either --images DIR or --image-embeddings X.npy (exactly one of them)"


@pytest.mark.slow
def test_missing_weights_offline_fail_fast_with_advice(elpv_images, tmp_path):
    (tmp_path / "terms.txt").write_text("crack\n")
    result = run_cli("cluster", "--images", elpv_images, "--vocab", tmp_path / "terms.txt", "--k", 2,
                     "--cache", tmp_path / "cache", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "ViT-B-32" in result.stderr and "--checkpoint" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


AUDIT_TERMS = ["crack", "scratch", "dent", "stain", "hole", "burn mark", "dark area", "finger interruption",
               "busbar", "solder bridge", "chip", "bubble"]


def test_cluster_writes_audit_csv_ranked_like_the_apps_audit_queue(elpv_images, tiny_model_config, tiny_checkpoint,
                                                                   tmp_path, monkeypatch):
    from tac_core.embedding.models import ModelSpec
    from tac_core.inputs.vocab_spec import default_spec
    from tac_core.run import jobs
    from tac_core.run.params import RunParams
    from tac_core.workspace import ingest
    from tac_core.workspace.review import ReviewSession
    from tac_core.workspace.review_audit import audit_session
    from tac_core.workspace.workspace import create_workspace

    terms = tmp_path / "terms.txt"
    terms.write_text("\n".join(AUDIT_TERMS) + "\n")
    out = tmp_path / "out"
    result = run_cli("cluster", "--images", elpv_images, "--model", tiny_model_config, "--checkpoint",
                     tiny_checkpoint, "--vocab", terms, "--k", 3, "--mode", "trained", "--epochs", 2, "--seed", 1,
                     "--cache", tmp_path / "cache", "--out", out, env={"TAC_STUDIO_IMAGE_PRECISION": "fp32"})
    assert result.returncode == 0, result.stderr
    audit = pd.read_csv(out / "audit.csv")
    assert list(audit.columns) == ["index", "path", "rank", "score", "low_confidence", "cross_modal", "neighbours",
                                   "atypicality", "duplicates", "reasons", "suggested_cluster"]
    assert audit["rank"].tolist() == list(range(24)) and sorted(audit["index"]) == list(range(24))
    assert audit["score"].is_monotonic_decreasing and audit["reasons"].str.len().gt(0).all()
    assert "audit" in json.loads((out / "run.json").read_text())["seconds"]

    # the same run in a workspace, as the app computes it, and the queue the Audit page shows for it
    monkeypatch.setenv("TAC_STUDIO_IMAGE_PRECISION", "fp32")
    monkeypatch.setenv(jobs.INLINE_ENV, "1")
    workspace = create_workspace("audit", tmp_path / "data")
    ingest.add_folder(workspace, elpv_images)
    spec = {**default_spec(), "wordnet": False, "templates": "tac7",
            "domain_terms": [{"term": term, "note": ""} for term in AUDIT_TERMS]}
    run_id = jobs.start_run(workspace, RunParams(3, ModelSpec(str(tiny_model_config), checkpoint=str(tiny_checkpoint)),
                                                 "terms", spec, mode="trained", seed=1, epochs=2, projection="pca",
                                                 suggest_k=False))
    assignments = workspace.run_assignments(run_id)
    cli_labels = pd.read_csv(out / "assignments.csv")
    assert [Path(p).name for p in cli_labels["path"]] == assignments["rel_path"].tolist()
    assert cli_labels["cluster"].tolist() == assignments["cluster"].tolist()  # the same run
    queue = audit_session(ReviewSession(workspace, run_id))
    assert queue.mode == "trained"
    app_top = assignments["rel_path"].to_numpy()[queue.queue[:10]].tolist()
    assert [Path(p).name for p in audit["path"][:10]] == app_top
    np.testing.assert_allclose(audit["score"][:10], queue.score[queue.queue[:10]], atol=1e-5)
    workspace.close()


@pytest.mark.slow
def test_bad_numbers_are_told_before_torch_or_open_clip_load(tmp_path):
    code = ("import sys\nfrom tac_core.run.cli import main\n"
            f"code = main(['cluster', '--images', {str(tmp_path)!r}, '--k', '0', '--out', {str(tmp_path / 'o')!r}])\n"
            "print(code, 'torch' in sys.modules, 'open_clip' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False", "False"], result.stderr
    assert "--k (the clusters) must be at least 2; got 0" in result.stderr
