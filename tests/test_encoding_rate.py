"""Encoding rates for the cost estimates (``tac_core.embedding.encoding_rate``, recorded by
``embed_vocabulary`` while it encodes) and what earlier runs of a workspace tell the next one
(``tac_core.run.history``)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tac_core import atomic
from tac_core.embedding import embed
from tac_core.embedding.embed import embed_vocabulary, expected_encoding_rate, vocabulary_estimate
from tac_core.embedding.encoding_rate import (CPU_PROMPTS_PER_CORE_S, guessed_encoding_rate,
                                              measure_encoding_rate, planned_precision, record_encoding_rate,
                                              recorded_encoding_rate)
from tac_core.inputs.imageset import ImageRecord, ImageSet
from tac_core.inputs.vocabulary import Vocabulary
from tac_core.run.history import latest_k_suggestion
from tac_core.workspace.workspace import create_workspace

MODEL = {"name": "ViT-B-32", "pretrained": "openai", "checkpoint": None}
CPU = torch.device("cpu")


def test_measured_rate_times_the_tiny_model_and_is_kept(tiny_spec, tmp_path):
    terms = ["crack", "scratch", "stain", "dent", "burr", "chip", "pit", "void"]
    rate = measure_encoding_rate(tiny_spec, "tac3", "cpu", terms, model_folder=tmp_path)
    assert rate.source == "measured just now" and rate.prompts_per_second > 0
    assert rate.seconds(300, "tac3") == pytest.approx(900 / rate.prompts_per_second)
    kept = recorded_encoding_rate(tmp_path, CPU, planned_precision("cpu")[1])
    assert kept.prompts_per_second == pytest.approx(rate.prompts_per_second)


def test_recorded_rates_are_per_device_and_precision_and_the_newest_wins(tmp_path):
    assert record_encoding_rate(tmp_path, CPU, "fp32", 199, 1.0) is None  # too few prompts to tell
    assert recorded_encoding_rate(tmp_path, CPU, "fp32") is None
    record_encoding_rate(tmp_path, CPU, "fp32", 1000, 10.0)
    record_encoding_rate(tmp_path, CPU, "bf16", 1000, 4.0)
    newest = record_encoding_rate(tmp_path, CPU, "fp32", 1000, 5.0)
    assert recorded_encoding_rate(tmp_path, CPU, "fp32") == newest and newest.prompts_per_second == 200
    assert recorded_encoding_rate(tmp_path, CPU, "bf16").prompts_per_second == 250
    assert newest.source.startswith("measured on ") and "1,000 prompts" in newest.source


def test_guessed_rate_on_the_cpu_scales_with_cores():
    rate = guessed_encoding_rate("cpu")
    cores = os.cpu_count() or 1
    speedup = 2.4 if planned_precision("cpu")[1] == "bf16" else 1.0
    assert rate.prompts_per_second == pytest.approx(CPU_PROMPTS_PER_CORE_S * cores * speedup)
    assert rate.source.startswith(f"a rough guess for {cores} CPU cores")


def test_a_vocabulary_encoding_records_its_rate_per_prompt_as_it_goes(tiny_spec, tmp_path, monkeypatch):
    """Issue 11, bug 2: the estimate came from a run with the same template set, else a guess 7x off; now the
    rate measured for this model and device serves every template set, and a running encoding updates it."""
    assert expected_encoding_rate(tiny_spec, tmp_path, "cpu") == guessed_encoding_rate("cpu")
    monkeypatch.setattr(embed, "VOCABULARY_WRITE_S", 0.0)  # a write (and a rate) after every batch
    seen_while_running = []

    def progress(stage, done, total):
        if done > 300 and not seen_while_running:
            seen_while_running.append(expected_encoding_rate(tiny_spec, tmp_path, "cpu"))
    names = Vocabulary.wordnet(categories=["noun.shape"]).names
    embed_vocabulary(tiny_spec, names, "tac7", tmp_path, device="cpu", batch_size=64, progress=progress)
    assert seen_while_running and seen_while_running[0].source.startswith("measured on ")
    rate = expected_encoding_rate(tiny_spec, tmp_path, "cpu")
    assert rate.source.startswith("measured on ") and rate != guessed_encoding_rate("cpu")
    estimate = vocabulary_estimate(tiny_spec, names + ["hairline crack"], "tac3", tmp_path, "cpu")
    assert (estimate.terms, estimate.missing, estimate.prompts_per_term) == (len(names) + 1, len(names) + 1, 3)
    assert estimate.rate == rate and estimate.seconds == pytest.approx((len(names) + 1) * 3 / rate.prompts_per_second)
    assert vocabulary_estimate(tiny_spec, names, "tac7", tmp_path, "cpu").missing == 0


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


def test_latest_k_suggestion_is_the_newest_finished_runs(ws):
    assert latest_k_suggestion(ws) is None
    add_run(ws, MODEL, "tac7", summary={"k_suggestion": {"best_k": 3}})
    second = add_run(ws, MODEL, "tac7", summary={"k_suggestion": {"best_k": 5}})
    add_run(ws, MODEL, "tac7", summary={"k_suggestion": None})  # computed none
    add_run(ws, MODEL, "tac7", summary={"k_suggestion": {"best_k": 9}}, done=False)  # not finished
    assert latest_k_suggestion(ws) == (second, {"best_k": 5})
