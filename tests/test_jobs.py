"""Runs as jobs: a real ``python -m tac_core run-job`` subprocess on 24 real images with the tiny model; cancel
with SIGTERM and a re-run that resumes from the cache; SIGKILL leaves an interrupted run in a sound workspace."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tac_core.workspace import ingest
from tac_core.run import jobs
from tac_core.run import params as run_params
from tac_core.run import job
from tac_core.run import pipeline
from tac_core.inputs import vocab_spec
from tac_core.errors import EmptyInputError, InvalidInputError
from tac_core.workspace.workspace import create_workspace, open_workspace

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]


def small_spec(category: str = "noun.shape") -> dict:
    return {**vocab_spec.default_spec(), "categories": [category], "domain_packs": ["surface_defects"],
            "domain_terms": [{"term": "hairline crack <b>", "note": ""}], "templates": "photo1"}


def params_for(tiny_model_config, tiny_checkpoint, **changes) -> run_params.RunParams:
    options = dict(model={"name": str(tiny_model_config), "pretrained": "openai", "checkpoint": str(tiny_checkpoint)},
                   vocab_set="small", vocab_spec=small_spec(), n_clusters=3, projection="pca", seed=1)
    options.update(changes)
    return run_params.RunParams(**options)


@pytest.fixture
def workspace(tmp_path, elpv_images, monkeypatch):
    monkeypatch.delenv(jobs.INLINE_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ws = create_workspace("jobs", tmp_path / "data")
    ingest.add_folder(ws, elpv_images)
    yield ws
    ws.close()


def wait_for(ws, run_id, condition, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = ws.run(run_id)
        stages = jobs.read_stages(ws, run_id)
        if condition(run, stages):
            return run, stages
        time.sleep(0.05)
    raise AssertionError(f"timed out; run is {ws.run(run_id)}, stages {jobs.read_stages(ws, run_id)}\n"
                         f"{jobs.log_tail(ws, run_id, 40)}")


def finished(run, _):
    return run["status"] not in ("pending", "running")


def vocabulary_stage(stages):
    return next((s for s in stages if s["stage"] == "embedding vocabulary"), None)


def test_a_job_subprocess_computes_and_stores_everything(workspace, tiny_model_config, tiny_checkpoint):
    started = time.monotonic()
    run_id = jobs.start_run(workspace, params_for(tiny_model_config, tiny_checkpoint))
    assert workspace.run(run_id)["pid"] and workspace.run(run_id)["status"] in ("running", "done")
    run, stages = wait_for(workspace, run_id, finished)
    seconds = time.monotonic() - started
    assert run["status"] == "done", run["error"]
    assert run["n_clusters"] == 3 and run["params"]["vocab_spec"] == small_spec()
    assignments = workspace.run_assignments(run_id)
    assert len(assignments) == 24 and set(assignments["cluster"]) <= {0, 1, 2}
    anchors = workspace.run_anchors(run_id)
    assert len(anchors) == 3 and all(anchors)
    for name, shape in [("image_embeddings", (24, 32)), ("counterparts", (24, 32)), ("cluster_centers", (3, 64)),
                        ("confidence", (24,)), ("margin", (24,)), ("projection", (24, 2))]:
        array = workspace.load_run_array(run_id, name)
        assert array is not None and array.shape == shape and np.isfinite(array).all(), name
    assert [s["stage"] for s in stages] == list(run_params.STAGES["free"])
    assert all(s["done"] == s["total"] for s in stages)
    summary = jobs.read_summary(workspace, run_id)
    assert summary["n_images"] == 24 and summary["failed_images"] == [] and summary["selected_terms"]
    assert summary["k_suggestion"]["best_k"] in (2, 3, 4)
    assert summary["image_precision"] in ("fp32", "bf16")
    assert "run 1 done" in jobs.log_tail(workspace, run_id)
    print(f"24-image tiny-model run through a subprocess: {seconds:.1f} s")


def test_trained_mode_keeps_probabilities_and_heads(workspace, tiny_model_config, tiny_checkpoint, monkeypatch):
    from tac_core.cluster.heads import head_probabilities

    monkeypatch.setenv(jobs.INLINE_ENV, "1")  # same process: the subprocess path is covered above
    run_id = jobs.start_run(workspace, params_for(tiny_model_config, tiny_checkpoint, mode="trained", epochs=2,
                                                  suggest_k=False))
    run = workspace.run(run_id)
    assert run["status"] == "done", run["error"]
    p = workspace.load_run_array(run_id, "probabilities")
    q = workspace.load_run_array(run_id, "text_probabilities")
    assert p.shape == q.shape == (24, 3) and workspace.load_run_array(run_id, "margin") is None
    heads = jobs.load_heads(workspace, run_id)
    x = workspace.load_run_array(run_id, "image_embeddings")
    np.testing.assert_allclose(head_probabilities(heads, x, "image"), p, atol=1e-5)
    stages = [s["stage"] for s in jobs.read_stages(workspace, run_id)]
    assert stages == ["embedding images", "embedding vocabulary", "selecting nouns", "estimating sizes",
                      "finding neighbours", "training", "projection"]  # sizes: the free partition the heads aim at
    assert stages == [s for s in run_params.STAGES["trained"] if s != "suggesting K"]


def test_sigterm_cancels_and_a_rerun_resumes_from_the_cache(workspace, tiny_model_config, tiny_checkpoint):
    params = params_for(tiny_model_config, tiny_checkpoint, vocab_spec=small_spec("noun.artifact"), suggest_k=False)
    run_id = jobs.start_run(workspace, params)
    # wait until the first 2048 terms are cached (one shard), then cancel
    wait_for(workspace, run_id, lambda run, st: finished(run, st) or
             ((vocabulary_stage(st) or {}).get("done", 0) > 2048))
    assert jobs.cancel_run(workspace, run_id) == "stopping"
    run, stages = wait_for(workspace, run_id, finished, timeout=60)
    assert run["status"] == "cancelled" and "cancelled by the user" in run["error"]
    assert workspace.run_assignments(run_id).empty and workspace.load_run_array(run_id, "projection") is None
    cached_before = vocabulary_stage(stages)["done"]

    jobs.rerun(workspace, run_id)
    run, stages = wait_for(workspace, run_id, finished)
    assert run["status"] == "done", run["error"]
    resumed = vocabulary_stage(stages)
    assert resumed["first_done"] >= 2048 and resumed["first_done"] <= cached_before  # finished batches were kept
    assert len(workspace.run_assignments(run_id)) == 24


def test_sigkill_leaves_an_interrupted_run_and_a_sound_workspace(workspace, tiny_model_config, tiny_checkpoint):
    params = params_for(tiny_model_config, tiny_checkpoint, vocab_spec=small_spec("noun.artifact"), suggest_k=False)
    run_id = jobs.start_run(workspace, params)
    run, _ = wait_for(workspace, run_id, lambda run, st: finished(run, st) or vocabulary_stage(st) is not None)
    assert run["status"] == "running"
    os.kill(run["pid"], signal.SIGKILL)
    run, _ = wait_for(workspace, run_id, lambda run, st: run["status"] != "running", timeout=30)
    assert run["status"] == "interrupted"
    with sqlite3.connect(workspace.db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    reopened = open_workspace(workspace.path)
    assert reopened.run(run_id)["status"] == "interrupted"
    reopened.close()

    jobs.rerun(workspace, run_id)
    run, _ = wait_for(workspace, run_id, finished)
    assert run["status"] == "done", run["error"]


def test_a_pending_run_cancelled_before_its_job_starts_never_runs(workspace, tiny_model_config, tiny_checkpoint):
    run_id = workspace.create_run(params_for(tiny_model_config, tiny_checkpoint).to_dict(),
                                  workspace.images("ok")["id"].to_numpy())
    assert jobs.cancel_run(workspace, run_id) == "cancelled"
    assert job.run_job(workspace.path, run_id) == "cancelled"
    assert workspace.run(run_id)["status"] == "cancelled" and jobs.read_stages(workspace, run_id) == []


def test_failures_are_explained_in_plain_words(workspace, tiny_model_config, tiny_checkpoint, tmp_path):
    missing = tmp_path / "gone.pt"
    run_id = workspace.create_run(params_for(tiny_model_config, missing).to_dict(), workspace.images("ok")["id"].to_numpy())
    assert job.run_job(workspace.path, run_id) == "failed"
    run = workspace.run(run_id)
    assert run["status"] == "failed" and f"Checkpoint file {missing} does not exist" in run["error"]
    oom = job.explain_failure(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), Path("job.log"))
    assert "ran out of memory" in oom and "try device cpu or a smaller" in oom
    bug = job.explain_failure(KeyError("x"), Path("/w/runs/1/job.log"))
    assert "unexpected failure (KeyError" in bug and "/w/runs/1/job.log" in bug


def test_starting_a_run_checks_its_inputs(tmp_path, workspace, tiny_model_config, tiny_checkpoint):
    with pytest.raises(InvalidInputError, match="more than the 24 usable images"):
        jobs.start_run(workspace, params_for(tiny_model_config, tiny_checkpoint, n_clusters=25))
    with pytest.raises(InvalidInputError, match="mode must be one of"):
        params_for(tiny_model_config, tiny_checkpoint, mode="fast")
    with pytest.raises(InvalidInputError, match="n_clusters must be a whole number of at least 2"):
        params_for(tiny_model_config, tiny_checkpoint, n_clusters=1)
    with pytest.raises(InvalidInputError, match="unknown prompt template set"):
        params_for(tiny_model_config, tiny_checkpoint, vocab_spec={"templates": "x"})
    empty = create_workspace("empty", tmp_path / "data")
    with pytest.raises(EmptyInputError, match="no usable images"):
        jobs.start_run(empty, params_for(tiny_model_config, tiny_checkpoint))
    assert workspace.runs().empty and empty.runs().empty
    assert run_params.RunParams(model={"name": "ViT-B-32"}, vocab_set="d", vocab_spec={}, n_clusters=5).projection \
        == "umap"  # the app's default layout is UMAP; tests pass "pca" to skip numba's compile


def test_run_job_command_reports_a_bad_workspace_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tac_core", "run-job", "--workspace", str(tmp_path / "nope"),
                           "--run", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_the_default_layout_is_the_umap_projection(monkeypatch):
    import tac_core.cluster.projection as projection

    calls = []

    class Fitted:
        coordinates = np.ones((5, 2))

    def fake_fit(features, random_state=0, progress=None):
        calls.append((features.shape, random_state))
        progress("projecting", 1, 2)
        return Fitted()

    monkeypatch.setattr(projection, "fit_projection", fake_fit)
    seen = []
    fitted = pipeline.compute_projection(np.zeros((5, 8), np.float32), "umap", seed=7,
                                         progress=lambda *a: seen.append(a))
    assert calls == [((5, 8), 7)] and seen == [("projection", 1, 2)] and isinstance(fitted, Fitted)
    quick = pipeline.compute_projection(np.random.default_rng(0).random((5, 8)).astype(np.float32), "pca")
    assert quick.coordinates.shape == (5, 2) and len(calls) == 1
