"""Shared pytest fixtures. Each section belongs to the module it serves; add new fixtures in a new section."""
from __future__ import annotations

import importlib.resources
import shutil
from pathlib import Path

import pytest

# ---------------------------------------------------------------------------------------------------------
# Models and real images (tac_core.embedding.models, text_encoding, image_encoding, cache, embed)
# A tiny open_clip architecture (tests/tiny_clip.json), saved as a checkpoint and reloaded through the real
# loading path, and small real images from the elpv-dataset and conformal-clip-data packages.
# ---------------------------------------------------------------------------------------------------------

TINY_CLIP_CONFIG = Path(__file__).with_name("tiny_clip.json")


@pytest.fixture(scope="session")
def tiny_model_config() -> Path:
    """Path to the tiny open_clip model config (embed_dim 32, 32-pixel images, 2-layer towers)."""
    return TINY_CLIP_CONFIG


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model_config) -> Path:
    """Weights of the tiny model (seed-0 random init), saved with ``save_checkpoint``."""
    from tac_core.embedding.models import ModelSpec, load_model, save_checkpoint

    model = load_model(ModelSpec(str(tiny_model_config), pretrained="none"), "cpu").model
    return save_checkpoint(model, tmp_path_factory.mktemp("tiny-weights") / "tiny_clip.pt")


@pytest.fixture(scope="session")
def tiny_spec(tiny_model_config, tiny_checkpoint):
    """The tiny model as a user would name it: a JSON config plus a checkpoint file."""
    from tac_core.embedding.models import ModelSpec

    return ModelSpec(str(tiny_model_config), checkpoint=str(tiny_checkpoint))


@pytest.fixture(scope="session")
def tiny_model(tiny_spec):
    """The tiny model loaded on the CPU through ``load_model``."""
    from tac_core.embedding.models import load_model

    return load_model(tiny_spec, "cpu")


@pytest.fixture
def count_forward(tiny_model, monkeypatch):
    """The sizes of the batches that go through the tiny model's image tower. Image precision is fp32 here,
    where the tower is the model's own ``encode_image``, called once per CPU micro-batch."""
    from tac_core.embedding import image_encoding

    monkeypatch.setenv(image_encoding.PRECISION_ENV, "fp32")
    seen = []
    original = tiny_model.model.encode_image
    monkeypatch.setattr(tiny_model.model, "encode_image", lambda images: seen.append(len(images)) or original(images))
    return seen


@pytest.fixture(scope="session")
def elpv_images(tmp_path_factory) -> Path:
    """A folder of 24 real 300×300 grayscale solar-cell PNGs (every 109th image of elpv-dataset)."""
    source = importlib.resources.files("elpv_dataset") / "data" / "images"
    chosen = sorted(p.name for p in source.iterdir() if p.name.endswith(".png"))[::109][:24]
    folder = tmp_path_factory.mktemp("elpv")
    for name in chosen:
        with importlib.resources.as_file(source / name) as path:
            shutil.copy(path, folder / name)
    return folder


@pytest.fixture(scope="session")
def elpv_paths(elpv_images) -> list[Path]:
    """The 24 elpv PNGs, sorted by name."""
    return sorted(elpv_images.glob("*.png"))


@pytest.fixture(scope="session")
def textile_images(tmp_path_factory) -> Path:
    """A folder with sub-folders nominal/, local/, global/ of 4 real textile JPEGs each (conformal-clip-data)."""
    source = importlib.resources.files("conformal_clip_data") / "data" / "textile_images" / "simulated"
    folder = tmp_path_factory.mktemp("textile")
    for label in ("nominal", "local", "global"):
        (folder / label).mkdir()
        for name in sorted(p.name for p in (source / label).iterdir() if p.name.endswith(".jpg"))[:4]:
            with importlib.resources.as_file(source / label / name) as path:
                shutil.copy(path, folder / label / name)
    return folder


# ---------------------------------------------------------------------------------------------------------
# The app (pages through AppTest, with jobs run in-process)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def app_data(tmp_path, monkeypatch) -> Path:
    """The app's data folder, with runs inline and no folder restriction; afterwards the app's cached workspace
    handles are dropped and their files closed."""
    import gc

    import streamlit as st

    from tac_core.workspace import ingest
    from tac_core.run import jobs

    data = tmp_path / "data"
    monkeypatch.setenv("TAC_STUDIO_DATA", str(data))
    monkeypatch.setenv(jobs.INLINE_ENV, "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(ingest.ALLOWED_ROOTS_ENV, raising=False)
    yield data
    st.cache_resource.clear()
    st.cache_data.clear()
    gc.collect()


# ---------------------------------------------------------------------------------------------------------
# CLIP-like points (tac_core.cluster: neighbours, k-means, audit signals; tac_core.numerics)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def clip_like_points():
    """3,000 CLIP-like 64-d unit rows (30 class × style blobs with noise), as k-means and neighbours see them."""
    from tac_core.cluster.synthetic import make_clip_like_bed

    return make_clip_like_bed(n_samples=3000, n_classes=10, dim=64, n_distractor_nouns=10,
                              random_state=7).image_embeddings


# ---------------------------------------------------------------------------------------------------------
# Ray (tac_core.embedding.distributed): one local Ray of 2 CPUs for the whole session, started on first use
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_address() -> str:
    """A local Ray with 2 CPUs and a small object store, connected in this process: the code under test finds
    it connected and uses it (``--ray local`` included), child processes join it by this address. Shut down
    when the session ends."""
    import ray

    from tac_core.embedding.ray_cluster import RayOptions, connect

    connect(RayOptions("local", local_cpus=2, object_store_mb=256))
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
