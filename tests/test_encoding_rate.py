"""Encoding rates for the vocabulary page's cost estimate (``tac_core.embedding.encoding_rate``) and what earlier
runs of a workspace tell the next one (``tac_core.run.history``)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tac_core import atomic
from tac_core.embedding.encoding_rate import (CPU_PROMPTS_PER_CORE_S, EncodingRate, guessed_encoding_rate,
                                              measure_encoding_rate, observed_encoding_rate)
from tac_core.inputs.imageset import ImageRecord, ImageSet
from tac_core.run.history import latest_k_suggestion, text_encoding_rate
from tac_core.workspace.workspace import create_workspace

MODEL = {"name": "ViT-B-32", "pretrained": "openai", "checkpoint": None}


def test_measured_rate_times_the_tiny_model(tiny_spec):
    terms = ["crack", "scratch", "stain", "dent", "burr", "chip", "pit", "void"]
    rate = measure_encoding_rate(tiny_spec, "tac3", "cpu", terms)
    assert rate.source == "measured just now" and rate.prompts_per_second > 0
    assert rate.seconds(300, "tac3") == pytest.approx(900 / rate.prompts_per_second)


def test_observed_rate_needs_enough_terms_and_counts_prompts():
    assert observed_encoding_rate(49, 10.0, "tac7", "run 1") is None
    assert observed_encoding_rate(500, 0.0, "tac7", "run 1") is None
    rate = observed_encoding_rate(100, 7.0, "tac7", "run 4")
    assert rate == EncodingRate(100.0, "measured in run 4")  # 100 terms × 7 prompts in 7 s
    assert rate.seconds(10, "photo1") == pytest.approx(0.1)


def test_guessed_rate_on_the_cpu_scales_with_cores():
    rate = guessed_encoding_rate("cpu")
    cores = os.cpu_count() or 1
    assert rate == EncodingRate(CPU_PROMPTS_PER_CORE_S * cores, f"a rough guess for {cores} CPU cores")


@pytest.fixture
def ws(tmp_path):
    workspace = create_workspace("history", tmp_path)
    records = tuple(ImageRecord(f"/src/{i}.png", f"{i}.png", f"{i:064x}", 10, 4, 4, "ok", "") for i in range(4))
    workspace.add_image_set(ImageSet("/src", records), "folder", "/src")
    yield workspace
    workspace.close()


def add_run(ws, model: dict, templates: str, stages=None, summary=None, done: bool = True) -> int:
    ids = ws.images("ok")["id"].to_numpy()
    run_id = ws.create_run({"model": model, "vocab_spec": {"templates": templates}}, ids)
    if stages is not None:
        atomic.write_json(ws.run_dir(run_id) / "stages.json", {"stages": stages})
    if summary is not None:
        atomic.write_json(ws.run_dir(run_id) / "summary.json", summary)
    if done:
        ws.save_run_result(run_id, ids, np.array([0, 0, 1, 1]), np.ones(4), [[], []])
    return run_id


def vocabulary_stage(first_done: int, done: int, seconds: float) -> list[dict]:
    return [{"stage": "embedding images", "done": 4, "total": 4, "first_done": 0, "seconds": 1.0},
            {"stage": "embedding vocabulary", "done": done, "total": done, "first_done": first_done,
             "seconds": seconds}]


def test_text_encoding_rate_from_the_newest_run_with_this_model_and_templates(ws):
    assert text_encoding_rate(ws, MODEL, "tac7", "cpu") == guessed_encoding_rate("cpu")
    add_run(ws, MODEL, "tac7", vocabulary_stage(0, 300, 3.0))
    newer = add_run(ws, MODEL, "tac7", vocabulary_stage(0, 1000, 7.0), done=False)  # still running counts
    add_run(ws, MODEL, "tac7", vocabulary_stage(990, 1000, 0.5))  # mostly cached: too few encoded to tell
    add_run(ws, MODEL, "tac3", vocabulary_stage(0, 1000, 1.0))  # other templates
    add_run(ws, {**MODEL, "name": "ViT-L-14"}, "tac7", vocabulary_stage(0, 1000, 1.0))  # another model
    assert text_encoding_rate(ws, MODEL, "tac7", "cpu") == EncodingRate(1000.0, f"measured in run {newer}")


def test_latest_k_suggestion_is_the_newest_finished_runs(ws):
    assert latest_k_suggestion(ws) is None
    add_run(ws, MODEL, "tac7", summary={"k_suggestion": {"best_k": 3}})
    second = add_run(ws, MODEL, "tac7", summary={"k_suggestion": {"best_k": 5}})
    add_run(ws, MODEL, "tac7", summary={"k_suggestion": None})  # computed none
    add_run(ws, MODEL, "tac7", summary={"k_suggestion": {"best_k": 9}}, done=False)  # not finished
    assert latest_k_suggestion(ws) == (second, {"best_k": 5})
