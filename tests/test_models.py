import json
import shutil
import time

import huggingface_hub.constants
import pytest
import torch

from tac_core.embedding.cache import sha256_file
from tac_core.errors import InvalidInputError, WeightsUnavailableError
from tac_core.embedding import weights
from tac_core.embedding.weights import LOCAL_DIR_CONFIG
from tac_core.embedding.models import (
    ModelSpec,
    clear_model_cache,
    load_model,
    save_checkpoint,
)


def _assert_same_weights(model, checkpoint_path):
    saved = torch.load(checkpoint_path, weights_only=True)
    state = model.state_dict()
    assert saved.keys() == state.keys()
    for name, tensor in saved.items():
        assert torch.equal(state[name].cpu(), tensor), name


def test_checkpoint_is_reloaded_through_the_real_loading_path(tiny_spec, tiny_checkpoint):
    clear_model_cache()
    loaded = load_model(tiny_spec, "cpu")
    _assert_same_weights(loaded.model, tiny_checkpoint)
    assert not loaded.model.training
    assert loaded.embed_dim == 32
    assert loaded.device == torch.device("cpu")
    assert loaded.preprocess.transforms[0].size == 32  # the model's own val transform
    assert loaded.tokenizer(["a cat"]).shape == (1, 77)


def test_loaded_models_are_kept_in_memory(tiny_spec):
    assert load_model(tiny_spec, "cpu") is load_model(tiny_spec, "cpu")


def test_random_weights_are_seeded(tiny_model_config, tiny_checkpoint):
    clear_model_cache()
    model = load_model(ModelSpec(str(tiny_model_config), pretrained="none"), "cpu").model
    _assert_same_weights(model, tiny_checkpoint)  # the fixture saved a seed-0 build too


def test_identity_follows_the_weights(tiny_model_config, tiny_spec, tiny_checkpoint, tmp_path):
    assert ModelSpec().identity() == "ViT-B-32:openai"
    assert ModelSpec("ViT-B-32", "none").identity() == "ViT-B-32:random-seed0"
    identity = tiny_spec.identity()
    assert identity.startswith("tiny_clip[config ") and ":sha256-" in identity

    copy = tmp_path / "copy.pt"
    shutil.copy(tiny_checkpoint, copy)
    assert ModelSpec(str(tiny_model_config), checkpoint=str(copy)).identity() == identity  # content, not path

    changed = {name: tensor.clone() for name, tensor in load_model(tiny_spec, "cpu").model.state_dict().items()}
    changed["logit_scale"] += 1
    torch.save(changed, tmp_path / "changed.pt")
    assert ModelSpec(str(tiny_model_config), checkpoint=str(tmp_path / "changed.pt")).identity() != identity


def test_local_dir_folder_with_config_and_weights(tiny_model_config, tiny_spec, tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / LOCAL_DIR_CONFIG).write_text(json.dumps({"model_cfg": json.loads(tiny_model_config.read_text())}))
    source = load_model(tiny_spec, "cpu").model
    save_checkpoint(source, folder / "open_clip_model.safetensors")

    spec = ModelSpec(f"local-dir:{folder}")
    loaded = load_model(spec, "cpu")
    for name, tensor in source.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    assert spec.identity().startswith("local-dir[config ")
    assert spec.identity().endswith(f":sha256-{sha256_file(folder / 'open_clip_model.safetensors')}")


def test_local_dir_errors_name_the_folder(tiny_model_config, tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_model(ModelSpec(f"local-dir:{tmp_path / 'absent'}"), "cpu")
    with pytest.raises(InvalidInputError, match=LOCAL_DIR_CONFIG):
        load_model(ModelSpec(f"local-dir:{tmp_path}"), "cpu")
    (tmp_path / LOCAL_DIR_CONFIG).write_text(json.dumps({"model_cfg": json.loads(tiny_model_config.read_text())}))
    with pytest.raises(WeightsUnavailableError, match="no weights file"):
        load_model(ModelSpec(f"local-dir:{tmp_path}"), "cpu")


def test_missing_checkpoint(tiny_model_config, tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(WeightsUnavailableError, match="nowhere.pt does not exist"):
        load_model(ModelSpec(str(tiny_model_config), checkpoint=str(missing)), "cpu")


def test_corrupt_checkpoint(tiny_model_config, tiny_checkpoint, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(WeightsUnavailableError, match="truncated.pt could not be read"):
        load_model(ModelSpec(str(tiny_model_config), checkpoint=str(truncated)), "cpu")


def test_checkpoint_of_another_architecture(tiny_model_config, tiny_checkpoint, tmp_path):
    config = json.loads(tiny_model_config.read_text())
    config["embed_dim"] = 16
    other = tmp_path / "tiny_clip_16.json"
    other.write_text(json.dumps(config))
    with pytest.raises(WeightsUnavailableError, match="does not fit the architecture"):
        load_model(ModelSpec(str(other), checkpoint=str(tiny_checkpoint)), "cpu")


def test_offline_download_fails_at_once_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))  # open_clip's URL download cache: ~/.cache/clip
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as caught:
        load_model(ModelSpec("ViT-B-32", "openai"), "cpu")
    assert time.monotonic() - started < 5
    message = str(caught.value)
    for expected in ("ViT-B-32", "'openai'", str(tmp_path / "hub"), "--checkpoint", "local-dir:", "HF_HUB_OFFLINE=0"):
        assert expected in message
    assert "models folder" in caught.value.for_app() and "--checkpoint" not in caught.value.for_app()


@pytest.fixture
def silent_hub(monkeypatch, tmp_path):
    """A Hugging Face endpoint that accepts connections and never answers (a firewall that drops packets),
    no cached weights, downloads allowed."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    weights._probed.clear()
    yield
    server.close()
    weights._probed.clear()


def test_an_unreachable_hub_fails_fast_in_the_words_of_each_front_end(silent_hub):
    """Issue 11, bug 9: offline, the weights took ~55 s of Hugging Face retries to fail, and the page was told to
    "pass --checkpoint PATH"."""
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as caught:
        load_model(ModelSpec("ViT-B-32", "openai"), "cpu")
    assert time.monotonic() - started < weights.HUB_PROBE_TIMEOUT_S + 4
    assert "did not answer within 3 s" in str(caught.value) and "--checkpoint" in str(caught.value)
    app = caught.value.for_app()
    assert "cannot be reached" in app and "models folder" in app and "--" not in app
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError):
        weights.check_weights(ModelSpec("ViT-B-32", "laion2b_s34b_b79k"))  # the same server: asked once a minute
    assert time.monotonic() - started < 1


def test_check_weights_downloads_nothing(tiny_spec, monkeypatch):
    weights.check_weights(tiny_spec)  # a checkpoint that exists
    monkeypatch.setattr(weights, "source_reachable", lambda url: True)
    monkeypatch.setattr(weights, "_cached_tag_file", lambda config: None)
    monkeypatch.setattr(weights.open_clip, "download_pretrained", lambda *a, **k: pytest.fail("downloaded"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    weights.check_weights(ModelSpec("ViT-B-32", "openai"))  # downloadable: fine, fetched by the run


def test_config_file_needs_weights_or_none(tiny_model_config):
    with pytest.raises(WeightsUnavailableError, match="--checkpoint"):
        load_model(ModelSpec(str(tiny_model_config)), "cpu")


@pytest.mark.parametrize(
    "spec, message",
    [
        (ModelSpec("ViT-B-33"), "Unknown model"),
        (ModelSpec("ViT-B-32", "no-such-tag"), "not a pretrained tag"),
    ],
)
def test_unknown_names_are_input_errors(spec, message):
    with pytest.raises(InvalidInputError, match=message):
        load_model(spec, "cpu")


def test_bad_config_files(tmp_path):
    builtin_name = tmp_path / "ViT-B-32.json"
    builtin_name.write_text("{}")
    with pytest.raises(InvalidInputError, match="rename"):
        ModelSpec(str(builtin_name), "none").architecture_config()
    not_a_config = tmp_path / "other.json"
    not_a_config.write_text(json.dumps({"model_cfg": {}}))
    with pytest.raises(InvalidInputError, match="embed_dim, vision_cfg and text_cfg"):
        ModelSpec(str(not_a_config), "none").architecture_config()
    with pytest.raises(InvalidInputError, match="hf-hub"):
        ModelSpec("hf-hub:org/repo")
