"""What a new user met on the Cluster, Review and Export pages (issue 11), through Streamlit's AppTest: the
vocabulary's cost before a run, the first-run setting and the paper's, weights that cannot be had, the models
folder in the model picker, and runs listed without floats or serialisation failures."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from apptest_helpers import open_app
from tac_core.inputs import vocab_spec
from tac_core.run import params as run_params
from tac_core.workspace import ingest
from tac_core.workspace.workspace import create_workspace
from ui.safe_text import esc


@pytest.fixture
def ws(app_data, elpv_images):
    workspace = create_workspace("Line 3", app_data)
    ingest.add_folder(workspace, elpv_images)
    yield workspace
    workspace.close()


def button(at, prefix: str):
    found = [b for b in at.button if b.label.startswith(prefix)]
    assert found, f"no button {prefix!r}…; buttons: {[b.label for b in at.button]}"
    return found[0]


def texts(at) -> list[str]:
    return [e.value for kind in ("markdown", "caption", "info", "error", "warning", "success") for e in
            getattr(at, kind)]


def test_the_vocabulary_cost_shows_before_a_run_with_one_click_to_the_papers_setting(ws):
    """Friction 2: the first set was the full WordNet (1-2.5 h on a 2-core CPU) and no estimate was shown."""
    at = open_app("pages/cluster.py", ws)
    assert ws.load_vocab_set("default") == vocab_spec.quick_spec()  # this machine has no CUDA GPU
    assert any(t.startswith("Quick setting: this computer has no CUDA GPU") for t in texts(at))
    [cost] = [t for t in texts(at) if t.startswith("Vocabulary: About **")]
    assert "to encode 16,666 terms × 3 prompts at ~" in cost and "prompts/s (a rough guess for" in cost
    button(at, "Use the paper's full setting (67,186 terms, 7 prompts; about ").click()
    at.run()
    assert ws.load_vocab_set("default") == vocab_spec.default_spec()
    assert any("to encode 67,186 terms × 7 prompts" in t for t in texts(at))
    assert not [b for b in at.button if b.label.startswith("Use the paper's")]


def test_start_run_refuses_weights_that_cannot_be_had_at_once_in_the_pages_words(ws, monkeypatch, tmp_path):
    """Bug 9: the page waited ~55 s, then told a web user to "pass --checkpoint PATH"."""
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached
    at = open_app("pages/cluster.py", ws)
    assert next(t for t in at.text_input if t.label == "Model").value == "ViT-B-32"
    button(at, "Start run").click()
    at.run()
    [error] = [e.value for e in at.error]
    assert "are not on this machine" in error and "models folder" in error and "--checkpoint" not in error
    assert ws.runs().empty  # no run that fails a minute later


def test_the_models_folder_offers_its_models_by_name(ws, monkeypatch, tmp_path, tiny_model_config, tiny_checkpoint):
    """Friction 1: getting a model offline was undiscoverable."""
    folder = tmp_path / "models"
    (folder / "line3-tiny").mkdir(parents=True)
    (folder / "line3-tiny" / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": json.loads(tiny_model_config.read_text())}))
    shutil.copy(tiny_checkpoint, folder / "line3-tiny" / "open_clip_model.pt")
    (folder / "mystery.safetensors").write_bytes(b"not a state dict")
    monkeypatch.setenv("TAC_STUDIO_MODELS", str(folder))
    at = open_app("pages/cluster.py", ws)
    picker = at.selectbox(key="w_model_folder")
    assert picker.options == ["(a model typed below)", "line3-tiny", "mystery.safetensors"]
    assert any(esc(folder) in m.value for m in at.markdown)  # where to put weights
    assert any("snapshot_download('timm/vit_base_patch32_clip_224.openai'" in c.value for c in at.code)
    assert any(esc("laion2b_s34b_b79k") in c.value for c in at.caption)  # open_clip's published tags for ViT-B-32

    picker.set_value("line3-tiny").run()
    model = next(t for t in at.text_input if t.label == "Model")
    assert model.value == f"local-dir:{(folder / 'line3-tiny').resolve()}" and not at.error

    at.selectbox(key="w_model_folder").set_value("mystery.safetensors").run()
    assert any("Which architecture are the weights in " in i.value for i in at.info), [i.value for i in at.info]
    at.selectbox(key="model_folder_architecture").set_value("ViT-B-16").run()
    button(at, "Use this architecture").click()
    at.run()
    assert json.loads((folder / "architectures.json").read_text()) == {"mystery.safetensors": "ViT-B-16"}
    assert next(t for t in at.text_input if t.label == "Model").value == "ViT-B-16"
    assert next(t for t in at.text_input if t.label == "Checkpoint file (optional)").value == \
        str((folder / "mystery.safetensors").resolve())
    assert at.selectbox(key="w_model_folder").value == "mystery.safetensors"


@pytest.fixture
def finished_and_failed(ws, tiny_model_config, tiny_checkpoint):
    """Run 1 failed (no result), run 2 done with 3 clusters although K = 2 was asked (as a re-clustered run)."""
    model = {"name": str(tiny_model_config), "pretrained": "openai", "checkpoint": str(tiny_checkpoint)}
    params = run_params.RunParams(model=model, vocab_set="s", vocab_spec=vocab_spec.quick_spec(), n_clusters=2,
                                  projection="pca").to_dict()
    ids = ws.images("ok")["id"].to_numpy()
    failed = ws.create_run(params, ids)
    ws.set_run_status(failed, "failed", error="the weights file is damaged")
    done = ws.create_run(params, ids)
    ws.save_run_result(done, ids, np.arange(len(ids)) % 3, np.full(len(ids), 0.5), [[("crack", 0.3)]] * 3)
    return failed, done


def test_runs_are_listed_with_whole_cluster_counts(ws, finished_and_failed):
    """Bugs 7 and 8: "8.0 clusters" in the run picker, "K = 8" on Export for a 9-cluster run, and a pyarrow
    traceback in the server log whenever a failed run was listed next to a finished one."""
    failed, done = finished_and_failed
    at = open_app("pages/cluster.py", ws)
    table = at.dataframe[0].value
    assert str(table["clusters"].dtype) == "Int64"  # not a column of "" and numbers, which Arrow refuses
    assert [None if pd.isna(v) else int(v) for v in table["clusters"]] == [3, None]
    export = open_app("pages/export.py", ws)
    assert export.selectbox(key="export_run").options[0].startswith(f"Run {done} · 3 clusters · free · ")
    review = open_app("pages/review.py", ws, run_id=done)
    assert review.selectbox(key="review_run").options[0].startswith(f"Run {done} · 3 clusters · 24 images")
