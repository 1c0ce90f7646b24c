"""RunParams, the one description of a run: round trip, every refusal, rows stored by earlier versions; and the
one pipeline both front ends call (the CLI and a workspace job give the same clustering)."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tac_core.cluster import MODES
from tac_core.devices import DEVICES
from tac_core.embedding.cache import default_cache_root
from tac_core.embedding.models import ModelSpec
from tac_core.errors import EmptyInputError, InvalidInputError, ParameterError, RunStatusError
from tac_core.run import jobs
from tac_core.run.cli import build_parser, main as cli_main
from tac_core.run.job import finish_run
from tac_core.run.params import RunParams, model_from_dict, model_to_dict
from tac_core.workspace import ingest
from tac_core.workspace.workspace import create_workspace

LEGACY_DB = Path(__file__).parent / "data" / "legacy_workspace" / "workspace.db"
TERMS = ["crack", "stain", "scratch", "dark area"]


def full_params(**changes) -> RunParams:
    options = dict(n_clusters=4, model={"name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "checkpoint": None},
                   vocab_set="defects", vocab_spec={"wordnet": False, "domain_terms": TERMS, "templates": "tac3"},
                   mode="trained", seed=7, device="cpu", epochs=3, batch_size=16, projection="pca", suggest_k=False,
                   include_domain_terms=False)
    options.update(changes)
    return RunParams(**options)


# -- the stored form --------------------------------------------------------------------------------------
def test_to_dict_is_plain_json_and_from_dict_gives_the_same_params():
    params = full_params()
    stored = json.loads(json.dumps(params.to_dict()))
    assert RunParams.from_dict(stored) == params
    assert stored["model"] == {"name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "checkpoint": None}
    assert stored["templates"] == "tac3" and stored["vocab_spec"]["templates"] == "tac3"  # the set's, one value
    assert [t["term"] for t in stored["vocab_spec"]["domain_terms"]] == TERMS  # normalised by validate_spec
    assert set(stored) == {"n_clusters", "model", "vocab_set", "vocab_spec", "mode", "seed", "device", "epochs",
                           "batch_size", "projection", "suggest_k", "include_domain_terms", "templates", "balance"}


def test_params_are_frozen_and_keep_their_own_copy_of_the_vocabulary_set():
    spec = {"wordnet": False, "domain_terms": ["crack"]}
    params = RunParams(3, vocab_spec=spec)
    spec["domain_terms"].append("dent")
    params.to_dict()["vocab_spec"]["domain_terms"].append({"term": "stain", "note": ""})
    assert [t["term"] for t in params.vocab_spec["domain_terms"]] == ["crack"]
    with pytest.raises(AttributeError):
        params.n_clusters = 5
    assert hash(params) == hash(RunParams(3, vocab_spec={"wordnet": False, "domain_terms": ["crack"]}))


def test_the_model_dict_is_read_and_written_in_one_shape():
    spec = model_from_dict({"name": " ViT-B-16 ", "checkpoint": "", "identity": "ignored"})
    assert spec == ModelSpec("ViT-B-16", "openai", None)  # missing tag: the default weights
    assert model_to_dict(spec) == {"name": "ViT-B-16", "pretrained": "openai", "checkpoint": None}
    assert model_from_dict(spec) is spec and model_from_dict(None) is None and model_to_dict(None) is None
    assert RunParams(2, model=spec).model is spec


@pytest.mark.parametrize("changes, field, message", [
    ({"n_clusters": 1}, "n_clusters", "n_clusters must be a whole number of at least 2; got 1."),
    ({"n_clusters": 2.0}, "n_clusters", "n_clusters must be a whole number of at least 2; got 2.0."),
    ({"n_clusters": True}, "n_clusters", "n_clusters must be a whole number of at least 2; got True."),
    ({"n_clusters": None}, "n_clusters", "n_clusters must be a whole number of at least 2; got None."),
    ({"seed": -1}, "seed", "seed must be a whole number of at least 0; got -1."),
    ({"epochs": 0}, "epochs", "epochs must be a whole number of at least 1; got 0."),
    ({"batch_size": 0}, "batch_size", "batch_size must be a whole number of at least 1; got 0."),
    ({"mode": "fast"}, "mode", f"mode must be one of {', '.join(MODES)}; got 'fast'."),
    ({"device": "tpu"}, "device", f"device must be one of {', '.join(DEVICES)}; got 'tpu'."),
    ({"projection": "tsne"}, "projection", "projection must be one of umap, pca; got 'tsne'."),
    ({"templates": "tac9", "vocab_spec": None}, "templates",
     "unknown prompt template set 'tac9'; choose one of tac7, tac3, photo1."),
    ({"templates": "tac7"}, "templates",
     "the prompt template set 'tac7' differs from the vocabulary set's 'tac3'; give only one of them."),
])
def test_each_bad_value_is_refused_naming_its_field(changes, field, message):
    with pytest.raises(ParameterError) as caught:
        full_params(**changes)
    assert str(caught.value) == message and caught.value.field == field
    assert isinstance(caught.value, InvalidInputError)  # the app and the CLI show it as any bad input


@pytest.mark.parametrize("changes, error, message", [
    ({"model": {"name": ""}}, InvalidInputError, "Model name '' is empty"),
    ({"model": {"name": "hf-hub:org/model"}}, InvalidInputError, "'hf-hub:' names are not supported"),
    ({"model": "ViT-B-32"}, InvalidInputError, "a run's model must be given by name"),
    ({"vocab_spec": {"templates": "x"}}, InvalidInputError, "unknown prompt template set 'x'"),
    ({"vocab_spec": {"wordnet": "yes"}}, InvalidInputError, "'wordnet' must be true or false"),
])
def test_the_model_and_the_vocabulary_set_are_checked_with_their_own_messages(changes, error, message):
    with pytest.raises(error, match=message):
        full_params(**changes)


def test_what_follows_from_the_params_is_refused_where_it_is_missing():
    bare = RunParams(3)
    with pytest.raises(InvalidInputError, match="name no model"):
        bare.require_model()
    with pytest.raises(InvalidInputError, match="no vocabulary set"):
        bare.vocabulary()
    with pytest.raises(EmptyInputError, match="switched off"):
        RunParams(3, vocab_spec={"wordnet": False, "domain_terms": ["dent"], "disabled": ["dent"]}).vocabulary()
    with pytest.raises(InvalidInputError, match="must be a JSON object"):
        RunParams.from_dict(["n_clusters", 3])
    estimator = full_params().estimator()
    assert (estimator.n_clusters, estimator.mode, estimator.random_state, estimator.epochs, estimator.device,
            estimator.include_domain_terms) == (4, "trained", 7, 3, "cpu", False)


# -- rows stored by earlier versions ----------------------------------------------------------------------
def legacy_rows(tmp_path) -> dict[int, dict]:
    db = tmp_path / "legacy.db"
    shutil.copy(LEGACY_DB, db)  # never touch the fixture itself
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT id, params FROM runs ORDER BY id"))
    return {run_id: json.loads(text) for run_id, text in rows.items()}


def test_rows_stored_by_version_0_1_open(tmp_path):
    rows = legacy_rows(tmp_path)
    assert set(rows) == {1, 2} and "templates" not in rows[1] and "recluster" in rows[2]
    for run_id, row in rows.items():
        params = RunParams.from_dict(row)
        assert (params.n_clusters, params.mode, params.seed, params.projection, params.suggest_k) == \
            (3, "free", 1, "pca", False), run_id
        assert params.model == ModelSpec("/work/main/tests/tiny_clip.json", "openai",
                                         "/tmp/tac-studio-legacy-fixture/tiny_clip.pt")
        assert params.templates == "photo1"  # from the set the run copied
        assert params.include_domain_terms is True  # the only behaviour 0.1 had
        assert params.balance == "uniform"  # 0.1 computed equal-size clusters: read as what it computed
        stored = params.to_dict()
        assert {key: stored[key] for key in row if key != "recluster"} == \
            {key: value for key, value in row.items() if key != "recluster"}  # nothing it had is changed


def test_a_row_missing_later_fields_takes_their_defaults():
    params = RunParams.from_dict({"n_clusters": 5, "model": {"name": "ViT-B-32"}, "mode": "trained",
                                  "source": "/images", "cache_root": "/cache"})  # facts are not parameters
    assert params == RunParams(5, ModelSpec("ViT-B-32"), mode="trained", balance="uniform")
    assert (params.vocab_spec, params.templates, params.projection, params.batch_size, params.device) == \
        (None, "tac7", "umap", 64, "auto")


def test_cluster_sizes_are_estimated_unless_asked_and_reach_the_estimator():
    assert RunParams(3).balance == "estimated"
    assert RunParams(3, balance="uniform").estimator().balance == "uniform"
    assert RunParams.from_dict(RunParams(3).to_dict()).balance == "estimated"
    with pytest.raises(ParameterError, match="balance must be one of estimated, uniform; got 'equal'"):
        RunParams(3, balance="equal")


# -- run status ---------------------------------------------------------------------------------------------
def test_an_illegal_status_change_has_its_own_error_and_ending_an_ended_run_is_quiet(tmp_path, elpv_images):
    ws = create_workspace("status", tmp_path / "data")
    ingest.add_folder(ws, elpv_images)
    run_id = ws.create_run(RunParams(2).to_dict(), ws.images("ok")["id"].to_numpy()[:4])
    ws.set_run_status(run_id, "cancelled", error="by the user")
    with pytest.raises(RunStatusError, match="cancelled; it cannot become running") as caught:
        ws.set_run_status(run_id, "running")
    assert not isinstance(caught.value, InvalidInputError)
    with pytest.raises(InvalidInputError, match="run status 'finished'"):
        ws.set_run_status(run_id, "finished")  # a status that does not exist is a bad value
    finish_run(ws, run_id, "failed", "too late")
    assert ws.run(run_id)["status"] == "cancelled" and ws.run(run_id)["error"] == "by the user"
    ws.close()


# -- the cache default ----------------------------------------------------------------------------------------
def test_the_cache_default_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TAC_STUDIO_CACHE", str(tmp_path / "shared-cache"))
    assert default_cache_root() == tmp_path / "shared-cache"
    assert build_parser().parse_args(["cluster", "--k", "2", "--out", "o"]).cache == tmp_path / "shared-cache"
    monkeypatch.delenv("TAC_STUDIO_CACHE")
    assert default_cache_root() == Path.home() / ".cache" / "tac-studio"


# -- one pipeline for the CLI and the job ---------------------------------------------------------------------
def test_the_cli_and_a_workspace_job_compute_the_same_run(tmp_path, elpv_images, tiny_model_config, tiny_checkpoint,
                                                          monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TAC_STUDIO_IMAGE_PRECISION", "fp32")  # the same numbers on every CPU
    monkeypatch.setenv(jobs.INLINE_ENV, "1")
    terms = tmp_path / "terms.txt"
    terms.write_text("\n".join(TERMS) + "\n")
    out = tmp_path / "out"
    assert cli_main(["cluster", "--images", str(elpv_images), "--model", str(tiny_model_config), "--checkpoint",
                     str(tiny_checkpoint), "--vocab", str(terms), "--templates", "photo1", "--k", "3", "--seed", "2",
                     "--device", "cpu", "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0, \
        capsys.readouterr().err
    ws = create_workspace("same", tmp_path / "data")
    ingest.add_folder(ws, elpv_images)
    params = RunParams(3, {"name": str(tiny_model_config), "checkpoint": str(tiny_checkpoint)}, vocab_set="terms",
                       vocab_spec={"wordnet": False, "domain_terms": TERMS, "templates": "photo1"}, seed=2,
                       device="cpu", projection=None, suggest_k=False)
    run_id = jobs.start_run(ws, params)
    assert ws.run(run_id)["status"] == "done", ws.run(run_id)["error"]

    from_cli = pd.read_csv(out / "assignments.csv").set_index("path")["cluster"]
    from_job = ws.run_assignments(run_id).set_index("path")["cluster"]
    assert len(from_cli) == len(from_job) == 24
    np.testing.assert_array_equal(from_cli.sort_index().to_numpy(), from_job.sort_index().to_numpy())
    np.testing.assert_allclose(np.load(out / "counterparts.npy"), ws.load_run_array(run_id, "counterparts"),
                               atol=1e-6)

    run_json = json.loads((out / "run.json").read_text())
    summary = jobs.read_summary(ws, run_id)
    row = ws.run(run_id)["params"]
    assert set(run_json["params"]) == set(row)  # one shape for the parameters
    assert {key: run_json["params"][key] for key in row if key not in ("vocab_set", "vocab_spec")} == \
        {key: row[key] for key in row if key not in ("vocab_set", "vocab_spec")}
    for fact in ("model_identity", "vocabulary_fingerprint", "n_vocabulary", "n_domain_terms", "n_text_terms",
                 "n_semantic_centers", "tau", "device", "image_precision"):
        assert run_json[fact] == summary[fact], fact
    assert (out / "selected_vocab.txt").read_text().splitlines() == summary["selected_terms"]
    assert run_json["source"] == str(elpv_images) and set(run_json["versions"]) == set(summary["versions"])
    ws.close()
