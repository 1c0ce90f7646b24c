"""The models folder (``tac_core.embedding.model_folder``): model folders and weights files found by name, the
architecture of a weights file told by its shapes and name or asked once, and the command that fetches
published weights elsewhere."""
from __future__ import annotations

import json
import shutil

import open_clip
import pytest

from tac_core.embedding.model_folder import (ARCHITECTURES_FILE, download_command, find_models,
                                             fitting_architectures, published_tags, remember_architecture,
                                             settled_by_name)
from tac_core.embedding.models import load_model
from tac_core.embedding.weights import LOCAL_DIR_CONFIG
from tac_core.errors import InvalidInputError
from tac_core.run.params import model_from_dict
from tac_core.workspace.workspace import create_workspace, list_workspaces, models_dir


@pytest.fixture
def registered_tiny(tiny_model_config):
    """The tiny architecture registered with open_clip under its file stem, as a built-in one would be."""
    open_clip.add_model_config(tiny_model_config)
    return tiny_model_config.stem


def test_models_of_the_folder_are_found_by_name(tmp_path, tiny_model_config, tiny_checkpoint, registered_tiny):
    folder = tmp_path / "models"
    assert find_models(folder) == []  # no folder yet: no models
    (folder / "line3-finetuned").mkdir(parents=True)
    (folder / "line3-finetuned" / LOCAL_DIR_CONFIG).write_text(
        json.dumps({"model_cfg": json.loads(tiny_model_config.read_text())}))
    shutil.copy(tiny_checkpoint, folder / "line3-finetuned" / "open_clip_model.pt")
    shutil.copy(tiny_checkpoint, folder / "tiny weights.pt")
    (folder / "mystery.safetensors").write_bytes(b"not a state dict")
    (folder / "notes.txt").write_text("not a model")
    (folder / "empty folder").mkdir()

    models = {m.name: m for m in find_models(folder)}
    assert sorted(models) == ["line3-finetuned", "mystery.safetensors", "tiny weights.pt"]
    assert models["line3-finetuned"].is_folder and models["line3-finetuned"].model()["name"].startswith("local-dir:")
    assert models["tiny weights.pt"].candidates == (registered_tiny,)  # its shapes fit only that architecture
    assert models["tiny weights.pt"].model() == {"name": registered_tiny, "pretrained": "openai",
                                                 "checkpoint": str((folder / "tiny weights.pt").resolve())}
    assert models["mystery.safetensors"].architecture is None and models["mystery.safetensors"].model() is None
    for model in ("line3-finetuned", "tiny weights.pt"):  # both load as the tiny model
        assert load_model(model_from_dict(models[model].model()), "cpu").embed_dim == 32

    remember_architecture(folder, "mystery.safetensors", "ViT-B-32")  # asked once, then known
    assert json.loads((folder / ARCHITECTURES_FILE).read_text()) == {"mystery.safetensors": "ViT-B-32"}
    assert {m.name: m.architecture for m in find_models(folder)}["mystery.safetensors"] == "ViT-B-32"
    with pytest.raises(InvalidInputError, match="not an open_clip architecture"):
        remember_architecture(folder, "mystery.safetensors", "ViT-B-99")


def test_shapes_fit_both_gelu_variants_and_the_file_name_settles_it(tmp_path):
    pair = ("ViT-B-32", "ViT-B-32-quickgelu")
    assert settled_by_name("vit-b-32-openai.safetensors", pair) == "ViT-B-32-quickgelu"  # OpenAI's: QuickGELU
    assert settled_by_name("ViT-B-32-quickgelu laion.bin", pair) == "ViT-B-32-quickgelu"
    assert settled_by_name("weights.bin", pair) is None  # asked
    assert fitting_architectures(tmp_path / "absent.pt") == ()


def test_published_tags_and_the_download_command():
    assert "openai" in published_tags("ViT-B-32") and "laion2b_s34b_b79k" in published_tags("ViT-B-32")
    command = download_command("ViT-B-32", "openai")
    assert "snapshot_download('timm/vit_base_patch32_clip_224.openai', local_dir='ViT-B-32-openai'" in command
    assert download_command("ViT-B-32", "no-such-tag") is None


def test_the_models_folder_lives_in_the_data_folder_and_is_no_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("TAC_STUDIO_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("TAC_STUDIO_MODELS", raising=False)
    assert models_dir() == tmp_path / "data" / "models"
    create_workspace("line 3")
    models_dir().mkdir()
    assert [info.name for info in list_workspaces()] == ["line 3"]
    monkeypatch.setenv("TAC_STUDIO_MODELS", str(tmp_path / "shared models"))
    assert models_dir() == tmp_path / "shared models"
