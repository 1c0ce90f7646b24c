"""How fast a model encodes a vocabulary's prompts on a device, to tell a user what a run will cost before it
starts and how long a running one still needs.

A rate counts prompts (term × template) per second: the text tower's cost is per prompt, so one rate serves
every template set. Rates are kept per model, device and precision in the model's cache folder
(:data:`RATES_FILE` beside its ``text-*`` caches): every vocabulary encoding records what it measured while it
runs (:func:`record_encoding_rate`, called by :func:`tac_core.embedding.embed.embed_vocabulary` at each cache
write), so the estimate is this machine's newest measurement, not a guess, and follows a running job. Before
anything was measured, :func:`guessed_encoding_rate` gives a rough figure. Every rate says where it came from,
for the page to show next to the estimate.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..atomic import write_json
from ..devices import resolve_device
from ..inputs.prompts import template_set
from .models import ModelSpec, load_model
from .text_encoding import encode_vocabulary, resolve_text_precision

CPU_PROMPTS_PER_CORE_S = 75  # measured: ViT-B-32's text tower, exact fast path, fp32, 2 idle cores ≈ 150/s
CPU_BF16_SPEEDUP = 2.4  # measured: bf16 text tower on this AMX CPU, 2.3-2.5x (python -m bench.vocab_cache)
GPU_PROMPTS_S = 30000  # an H200 did 65,000-100,000/s; a workstation GPU does less: measure to be sure
WARM_UP_TERMS = 4
MIN_RECORDED_PROMPTS = 200  # fewer prompts time mostly the start-up, not the encoding
RATES_FILE = "text_rates.json"


@dataclass(frozen=True)
class EncodingRate:
    """Prompts encoded per second, and where that number comes from (a phrase: "measured just now")."""

    prompts_per_second: float
    source: str

    def seconds(self, n_terms: int, templates: str) -> float:
        """Time to encode ``n_terms`` terms with the template set ``templates`` at this rate."""
        return n_terms * len(template_set(templates)) / self.prompts_per_second


def rate_key(device: torch.device, precision: str) -> str:
    """What a rate depends on besides the model: the device (a CPU by its number of cores, a GPU by its name)
    and the precision the text tower runs in."""
    if device.type == "cuda":
        where = f"cuda {torch.cuda.get_device_name(device)}"
    elif device.type == "cpu":
        where = f"cpu {os.cpu_count() or 1} cores"
    else:
        where = device.type
    return f"{where} {precision}"


def planned_precision(device: str | torch.device) -> tuple[torch.device, str]:
    """The device a choice ("auto", "cpu", ...) resolves to here, and the precision a run's text tower will use
    on it (open_clip towers; see :func:`~tac_core.embedding.text_encoding.resolve_text_precision`)."""
    resolved = resolve_device(device)
    return resolved, resolve_text_precision("auto", resolved)


def record_encoding_rate(model_folder: str | os.PathLike, device: torch.device, precision: str, prompts: int,
                         seconds: float, min_prompts: int = MIN_RECORDED_PROMPTS) -> Optional[EncodingRate]:
    """Keep the rate of ``prompts`` encoded in ``seconds`` as the newest for this model folder, device and
    precision (nothing when fewer than ``min_prompts`` were timed: too few to tell); returns it."""
    if prompts < min_prompts or seconds <= 0:
        return None
    path = Path(model_folder) / RATES_FILE
    rates = _read(path)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rate = EncodingRate(prompts / seconds, f"measured on {when} over {prompts:,} prompts")
    rates[rate_key(device, precision)] = {"prompts_per_second": rate.prompts_per_second, "source": rate.source,
                                          "time": time.time()}
    write_json(path, rates)
    return rate


def recorded_encoding_rate(model_folder: str | os.PathLike, device: torch.device,
                           precision: str) -> Optional[EncodingRate]:
    """The newest rate recorded for this model folder, device and precision, or None."""
    entry = _read(Path(model_folder) / RATES_FILE).get(rate_key(device, precision))
    try:
        return EncodingRate(float(entry["prompts_per_second"]), str(entry["source"]))
    except (TypeError, KeyError, ValueError):
        return None


def measure_encoding_rate(spec: ModelSpec, templates: str, device: str, terms: Sequence[str],
                          model_folder: Optional[str | os.PathLike] = None) -> EncodingRate:
    """Load the model on ``device`` and time encoding ``terms`` (after a warm-up on a few of them) in the
    precision a run would use; with ``model_folder``, record the rate there too."""
    loaded = load_model(spec, device)
    precision = resolve_text_precision("auto", loaded.device)
    prompts = template_set(templates)
    encode_vocabulary(loaded, list(terms[:WARM_UP_TERMS]), prompts, precision=precision)
    start = time.perf_counter()
    encode_vocabulary(loaded, list(terms), prompts, precision=precision)
    seconds, n_prompts = max(time.perf_counter() - start, 1e-6), len(terms) * len(prompts)
    if model_folder is not None:
        record_encoding_rate(model_folder, loaded.device, precision, n_prompts, seconds, min_prompts=1)
    return EncodingRate(n_prompts / seconds, "measured just now")


def guessed_encoding_rate(device: str | torch.device) -> EncodingRate:
    """A rough rate for ``device`` ("auto", "cuda", "cpu", ...) on this machine, before anything was measured."""
    resolved, precision = planned_precision(device)
    if resolved.type == "cuda":
        return EncodingRate(GPU_PROMPTS_S, "a rough guess for a GPU")
    cores = os.cpu_count() or 1
    speedup = CPU_BF16_SPEEDUP if precision == "bf16" else 1.0
    return EncodingRate(CPU_PROMPTS_PER_CORE_S * cores * speedup,
                        f"a rough guess for {cores} CPU cores{' in bfloat16' if precision == 'bf16' else ''}")


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
