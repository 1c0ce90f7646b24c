"""Embedding on a Ray cluster (tac_core.embedding.distributed) against the single-machine path: a local Ray of
2 CPUs for the session (the ``ray_address`` fixture), the tiny test model, real elpv images and the corpus of bad
inputs. Vectors are compared in fp32. The kill of a Ray embedding job is in test_hardening_kills.py."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from bad_inputs import make_bad_input_corpus
from tac_core.embedding import image_encoding, text_encoding
from tac_core.embedding.cache import VectorStore
from tac_core.embedding.embed import embed_images, embed_vocabulary, model_cache_dir
from tac_core.embedding.ray_cluster import RayOptions, encoder_pool, ray_options
from tac_core.errors import InvalidInputError
from tac_core.progress import Cancelled, CancelToken
from tac_core.inputs import vocab_spec
from tac_core.run import cli, job, jobs
from tac_core.run.params import RunParams
from tac_core.workspace import ingest
from tac_core.workspace.workspace import create_workspace

LOCAL = RayOptions("local")


@pytest.fixture
def run_embed(tiny_model_config, tiny_checkpoint):
    """``python -m tac_core embed`` with the tiny model in fp32, in this process; returns OUT's run.json."""
    def run(out: Path, *args) -> dict:
        argv = ["embed", "--model", tiny_model_config, "--checkpoint", tiny_checkpoint, "--precision", "fp32",
                "--out", out, *args]
        assert cli.main([str(arg) for arg in argv]) == 0
        return json.loads((out / "run.json").read_text())
    return run


def load_output(out: Path) -> tuple[np.ndarray, list[str]]:
    return np.load(out / "embeddings.npy"), (out / "paths.txt").read_text().splitlines()


@pytest.mark.slow
def test_embed_on_local_ray_gives_this_machines_vectors_and_fills_its_cache(ray_address, run_embed, tmp_path,
                                                                             elpv_images):
    terms = tmp_path / "terms.txt"
    terms.write_text("hairline crack\ndark spot\nfinger interruption\nscratch\nbusbar\n")
    common = ["--images", elpv_images, "--vocab", terms, "--templates", "tac3"]
    here = run_embed(tmp_path / "here", *common, "--cache", tmp_path / "cache-here")
    on_ray = run_embed(tmp_path / "ray", *common, "--cache", tmp_path / "cache-ray", "--ray", "local",
                       "--workers", "2", "--cpus-per-worker", "0.5", "--batch-size", "8")

    x_here, paths_here = load_output(tmp_path / "here")
    x_ray, paths_ray = load_output(tmp_path / "ray")
    assert paths_ray == paths_here == sorted(str(p) for p in elpv_images.glob("*.png"))
    assert x_ray.dtype == np.float32 and x_ray.shape == (24, 32)
    np.testing.assert_allclose(np.linalg.norm(x_ray, axis=1), 1, atol=1e-5)
    assert np.abs(x_ray - x_here).max() <= 1e-5
    assert (tmp_path / "ray" / "vocab.txt").read_text() == (tmp_path / "here" / "vocab.txt").read_text()
    v_ray, v_here = (np.load(tmp_path / out / "vocab_embeddings.npy") for out in ("ray", "here"))
    assert v_ray.shape == (5, 32) and np.abs(v_ray - v_here).max() <= 1e-5
    assert on_ray["model"]["identity"] == here["model"]["identity"] and on_ray["precision"] == "fp32"
    assert on_ray["counts"] == {"images": 24, "encoded": 24, "from_cache": 0, "skipped": 0, "vocabulary": 5}
    assert on_ray["workers"]["ray"] == "local" and on_ray["workers"]["workers"] == 2
    assert here["workers"] == {"ray": None}

    again = run_embed(tmp_path / "again", *common, "--cache", tmp_path / "cache-ray")  # this machine, Ray's cache
    assert again["counts"]["encoded"] == 0 and again["counts"]["from_cache"] == 24
    np.testing.assert_array_equal(load_output(tmp_path / "again")[0], x_ray)
    np.testing.assert_array_equal(np.load(tmp_path / "again" / "vocab_embeddings.npy"), v_ray)


@pytest.mark.slow
def test_a_workspace_embedded_on_ray_leaves_the_app_nothing_to_embed(ray_address, run_embed, tmp_path, elpv_images,
                                                                     tiny_model_config, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv(image_encoding.PRECISION_ENV, "fp32")  # the job's "auto", as the CLI's --precision fp32
    ws = create_workspace("ray", tmp_path / "data")
    ingest.add_folder(ws, elpv_images)
    spec = {**vocab_spec.default_spec(), "categories": ["noun.shape"], "templates": "photo1",
            "domain_terms": [{"term": "hairline crack", "note": ""}]}
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{name}\n" for name in vocab_spec.build_vocabulary(spec).names))
    params = RunParams(model={"name": str(tiny_model_config), "checkpoint": str(tiny_checkpoint)}, vocab_set="s",
                       vocab_spec=spec, n_clusters=3, projection="pca", suggest_k=False, batch_size=4)

    def app_run() -> tuple[int, dict]:
        run_id = ws.create_run(params.to_dict(), ws.images("ok")["id"].to_numpy())
        assert job.run_job(ws.path, run_id) == "done", ws.run(run_id)["error"]
        return run_id, {s["stage"]: s for s in jobs.read_stages(ws, run_id)}

    embedded = run_embed(tmp_path / "out", "--workspace", ws.path, "--ray", "local", "--vocab", names,
                         "--templates", "photo1")
    assert embedded["counts"]["encoded"] == 24 and embedded["workers"]["ray"] == "local"
    first, stages = app_run()  # the Cluster page's job, on this machine
    for stage in ("embedding images", "embedding vocabulary"):
        assert stages[stage]["first_done"] == stages[stage]["total"], stage  # every vector came from the cache
    assert json.loads((ws.run_dir(first) / "summary.json").read_text())["ray_address"] is None

    shutil.rmtree(model_cache_dir(params.require_model(), ws.cache_dir))
    ws.set_setting("ray_address", "local")  # what the Cluster page stores: the job now embeds on Ray
    second, stages = app_run()
    assert stages["embedding images"]["first_done"] == 0 and stages["embedding images"]["done"] == 24
    assert json.loads((ws.run_dir(second) / "summary.json").read_text())["ray_address"] == "local"
    assert np.abs(ws.load_run_array(second, "image_embeddings") - ws.load_run_array(first, "image_embeddings")).max() \
        <= 1e-5
    ws.close()


@pytest.mark.slow
def test_unreadable_files_fail_on_ray_with_this_machines_reasons(ray_address, tiny_spec, tmp_path):
    """Every regular file of the bad-input corpus, given straight to the embedder (no scan to weed them out)."""
    make_bad_input_corpus(tmp_path / "corpus")
    paths = sorted(str(p) for p in (tmp_path / "corpus").rglob("*") if p.is_file() and not p.is_symlink())
    paths.append(str(tmp_path / "corpus" / "gone.png"))
    here = embed_images(tiny_spec, paths, None, tmp_path / "cache-here", device="cpu", precision="fp32",
                        thumbnails_dir=tmp_path / "thumbs-here")
    seen = []
    on_ray = embed_images(tiny_spec, paths, None, tmp_path / "cache-ray", precision="fp32", batch_size=8, ray=LOCAL,
                          thumbnails_dir=tmp_path / "thumbs-ray", progress=lambda *call: seen.append(call))
    assert len(here.failed) >= 10 and on_ray.failed == here.failed  # the same files, the same words
    assert any("looks like HTML" in reason for reason in on_ray.failed.values())
    ok = here.ok
    assert (on_ray.ok == ok).all() and np.abs(on_ray.embeddings[ok] - here.embeddings[ok]).max() <= 1e-5
    stored = VectorStore(model_cache_dir(tiny_spec, tmp_path / "cache-ray") / "images", 32)
    assert on_ray.encoded == here.encoded == len(stored) > 10  # distinct contents, each encoded once
    done = [d for stage, d, total in seen if stage == image_encoding.STAGE and total == len(paths)]
    assert done == sorted(done) and done[-1] == len(paths) and len(seen) == len(done)
    thumbnails = sorted(p.name for p in (tmp_path / "thumbs-here").iterdir())
    assert len(thumbnails) == len(stored) and sorted(p.name for p in (tmp_path / "thumbs-ray").iterdir()) == thumbnails
    assert all((tmp_path / "thumbs-ray" / name).read_bytes() == (tmp_path / "thumbs-here" / name).read_bytes()
               for name in thumbnails)  # made on the workers, written by this process: the same files


@pytest.mark.slow
def test_a_cancelled_ray_run_keeps_its_finished_batches(ray_address, tiny_spec, elpv_images, tmp_path):
    paths = sorted(elpv_images.glob("*.png"))
    token = CancelToken()

    def cancel_after_a_batch(stage, done, total):
        if done >= 4:
            token.cancel()

    with pytest.raises(Cancelled):
        embed_images(tiny_spec, paths, None, tmp_path, batch_size=4, ray=LOCAL, progress=cancel_after_a_batch,
                     cancel=token)
    kept = len(VectorStore(model_cache_dir(tiny_spec, tmp_path) / "images", 32))
    assert 4 <= kept < 24
    assert embed_images(tiny_spec, paths, None, tmp_path, batch_size=4, ray=LOCAL).encoded == 24 - kept


@pytest.mark.slow
def test_vocabulary_shards_over_the_workers_into_the_cache(ray_address, tiny_spec, tmp_path):
    names = [f"defect {i}" for i in range(40)] + ["crack", "Crack", "  crack  "]
    here = embed_vocabulary(tiny_spec, names, "tac3", tmp_path / "here", device="cpu")
    seen = []
    two = RayOptions("local", workers=2, cpus_per_worker=0.5)
    on_ray = embed_vocabulary(tiny_spec, names, "tac3", tmp_path / "ray", ray=two, progress=lambda *c: seen.append(c))
    assert np.abs(on_ray - here).max() <= 1e-5 and on_ray.shape == (43, 32)
    assert seen[0] == (text_encoding.STAGE, 0, 42) and seen[-1] == (text_encoding.STAGE, 42, 42)  # distinct names
    assert len(list((tmp_path / "ray").rglob("shard-*.keys.txt"))) == 2  # one shard per worker's share


@pytest.mark.slow
def test_ray_options_are_checked_before_any_work(ray_address):
    with pytest.raises(InvalidInputError, match="leave less than"):
        encoder_pool(RayOptions("local", workers=2))  # 2 workers × 1 CPU on 2 CPUs: decoding would never run
    with pytest.raises(InvalidInputError, match="no GPU"):
        encoder_pool(LOCAL, device="cuda")
    with pytest.raises(InvalidInputError, match="at least 1"):
        RayOptions("local", workers=0)
    with pytest.raises(InvalidInputError, match="'local', 'auto' or HOST:PORT"):
        ray_options("host name:6379")
    assert ray_options("  ") is None and ray_options(" auto ") == RayOptions("auto")
    assert encoder_pool(LOCAL).describe()["workers"] == 1


def test_embed_refuses_bad_arguments_in_one_line(capsys, tmp_path, elpv_images, tiny_model_config, tiny_checkpoint,
                                                  monkeypatch):
    model = ["--model", tiny_model_config, "--checkpoint", tiny_checkpoint, "--out", tmp_path / "out"]
    cases = [(["--images", elpv_images, "--workspace", tmp_path], "exactly one of --images"),
             (["--files", tmp_path / "none.txt"], "could not be read"),
             (["--images", elpv_images, "--workers", "2"], "need --ray"),
             (["--workspace", tmp_path, "--cache", tmp_path], "keeps its own cache"),
             (["--images", elpv_images, "--ray", "head node"], "'local', 'auto' or HOST:PORT"),
             (["--images", elpv_images, "--ray", "local", "--gpus-per-worker", "0"], "above 0")]
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    cases.append((["--images", elpv_images, "--ray", "local"], "pip install -r requirements-ray.txt"))
    for args, message in cases:
        assert cli.main([str(arg) for arg in ["embed", *model, *args]]) == 2, args
        error = capsys.readouterr().err.strip().splitlines()
        assert error[-1].startswith("error: ") and message in error[-1], (args, error)
    assert not (tmp_path / "out").exists()
