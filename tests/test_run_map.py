"""Placing images added after a run on its saved map, next to the images they look like, without moving it."""
from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from tac_core.cluster.projection import Projection
from tac_core.inputs import vocab_spec
from tac_core.run import jobs
from tac_core.run import params as run_params
from tac_core.workspace.run_layout import MAP_FOLDER
from tac_core.run.run_map import place_new
from tac_core.workspace import ingest
from tac_core.workspace.workspace import create_workspace


def test_place_new_puts_a_near_copy_of_a_training_image_next_to_it(tmp_path, elpv_images, tiny_model_config,
                                                                  tiny_checkpoint, monkeypatch):
    monkeypatch.setenv(jobs.INLINE_ENV, "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ws = create_workspace("place", tmp_path / "data")
    try:
        ingest.add_folder(ws, elpv_images)
        spec = {**vocab_spec.default_spec(), "categories": ["noun.shape"], "templates": "photo1"}
        model = {"name": str(tiny_model_config), "pretrained": "openai", "checkpoint": str(tiny_checkpoint)}
        params = run_params.RunParams(model=model, vocab_set="small", vocab_spec=spec, n_clusters=3,
                                      projection="pca", seed=1, suggest_k=False)
        run_id = jobs.start_run(ws, params)
        assert ws.run(run_id)["status"] == "done", ws.run(run_id)["error"]
        saved = Projection.load(ws.run_dir(run_id) / MAP_FOLDER)
        coords = ws.load_run_array(run_id, "projection")
        np.testing.assert_allclose(saved.coordinates, coords)
        assert place_new(ws, run_id)[0].size == 0  # nothing new yet

        original = sorted(elpv_images.glob("*.png"))[5]
        later = tmp_path / "later"
        later.mkdir()
        pixels = np.array(Image.open(original).convert("L"))
        pixels[0, 0] = 255 - pixels[0, 0]  # a near copy: other bytes, (almost) the same picture
        Image.fromarray(pixels).save(later / "near_copy.png")
        shutil.copy(sorted(elpv_images.glob("*.png"))[6], later / "exact_copy.png")  # a duplicate: not usable
        ingest.add_folder(ws, later)
        ids, placed = place_new(ws, run_id)
        assert len(ids) == 1 and placed.shape == (1, 2)
        run_rows = ws.run_assignments(run_id)
        nearest = int(np.argmin(np.linalg.norm(coords - placed[0], axis=1)))
        assert run_rows["rel_path"].iloc[nearest] == original.name
        spread = np.linalg.norm(coords - coords.mean(axis=0), axis=1).mean()
        assert np.linalg.norm(coords[nearest] - placed[0]) < 0.05 * spread
        again_ids, again = place_new(ws, run_id, image_ids=ids)  # explicit ids, now from the cache
        np.testing.assert_allclose(again, placed, atol=1e-5)
    finally:
        ws.close()
