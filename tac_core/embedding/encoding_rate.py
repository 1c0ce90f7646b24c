"""How fast a model encodes a vocabulary's prompts on a device, to tell a user what a run will cost before it
starts: measured here on a few terms, observed in a job that encoded terms, or a rough guess for the device.

A rate counts prompts (term × template) per second: the text tower's cost is per prompt, so the same rate
serves every template set. Every rate says where it came from, for the page to show next to the estimate.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..inputs.prompts import template_set
from .models import ModelSpec, load_model
from .text_encoding import encode_vocabulary

CPU_PROMPTS_PER_CORE_S = 75  # measured: ViT-B-32's text tower, exact fast path, 2 cores ≈ 150/s (python -m bench)
GPU_PROMPTS_S = 30000  # an H200 did 65,000-100,000/s; a workstation GPU does less: measure to be sure
WARM_UP_TERMS = 4
MIN_OBSERVED_TERMS = 50  # fewer encoded terms time mostly the start-up, not the encoding


@dataclass(frozen=True)
class EncodingRate:
    """Prompts encoded per second, and where that number comes from (a phrase: "measured in run 3")."""

    prompts_per_second: float
    source: str

    def seconds(self, n_terms: int, templates: str) -> float:
        """Time to encode ``n_terms`` terms with the template set ``templates`` at this rate."""
        return n_terms * len(template_set(templates)) / self.prompts_per_second


def measure_encoding_rate(spec: ModelSpec, templates: str, device: str, terms: Sequence[str]) -> EncodingRate:
    """Load the model on ``device`` and time encoding ``terms`` (after a warm-up on a few of them)."""
    loaded = load_model(spec, device)
    prompts = template_set(templates)
    encode_vocabulary(loaded, list(terms[:WARM_UP_TERMS]), prompts)
    start = time.perf_counter()
    encode_vocabulary(loaded, list(terms), prompts)
    return EncodingRate(len(terms) * len(prompts) / max(time.perf_counter() - start, 1e-6), "measured just now")


def observed_encoding_rate(terms_encoded: int, seconds: float, templates: str, where: str) -> Optional[EncodingRate]:
    """The rate a job showed encoding ``terms_encoded`` terms in ``seconds`` (``where``: "run 3"), or None
    when it encoded too few to tell."""
    if terms_encoded < MIN_OBSERVED_TERMS or seconds <= 0:
        return None
    return EncodingRate(terms_encoded * len(template_set(templates)) / seconds, f"measured in {where}")


def guessed_encoding_rate(device: str) -> EncodingRate:
    """A rough rate for ``device`` ("auto", "cuda", "cpu", ...) on this machine, before anything was measured."""
    if torch.cuda.is_available() and device != "cpu":
        return EncodingRate(GPU_PROMPTS_S, "a rough guess for a GPU")
    cores = os.cpu_count() or 1
    return EncodingRate(CPU_PROMPTS_PER_CORE_S * cores, f"a rough guess for {cores} CPU cores")
