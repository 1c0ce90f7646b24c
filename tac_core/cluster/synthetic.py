"""A synthetic CLIP-like test bed with ground truth, for tests and benchmarks without model weights.

It reproduces the situation TAC is built for:
- each class has a semantic direction shared by the image and text spaces (CLIP's alignment), and a few
  nouns (synonyms) lie close to it;
- a nuisance "style" factor (lighting, background, camera) is shared across classes and is *stronger* in
  image space than the class signal, so k-means on images alone groups by style;
- style has nouns too, but they describe it only weakly (text sees objects better than lighting);
- every image carries a common offset (the modality gap), and thousands of distractor nouns fill the
  vocabulary, as WordNet does.

Class sizes follow a *size profile* (:data:`SIZE_PROFILES`): ``"balanced"`` draws every image's class
uniformly (the bed every earlier measurement used); the others fix the counts and shuffle them, shaped like
plant sets, where a good part or one common defect dominates and the defects that matter are rare:

- ``"dominant"`` — class 0 holds half the images; the other classes share the rest in a geometric decay whose
  smallest is 1/8 of its largest (10 classes: 50, 12.7, 9.8, 7.5, 5.8, 4.5, 3.5, 2.7, 2.1, 1.6 %);
- ``"long_tail"`` — every class is a constant factor smaller than the one before, the last 1/50 of the first
  (10 classes: 35.7, 23.1, 15.0, 9.7, 6.3, 4.1, 2.6, 1.7, 1.1, 0.7 %).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError

SIZE_PROFILES = ("balanced", "dominant", "long_tail")
DOMINANT_SHARE = 0.5
DOMINANT_TAIL_RATIO = 8.0  # largest / smallest of the classes other than the dominant one
LONG_TAIL_RATIO = 50.0  # largest / smallest class


@dataclass
class SyntheticBed:
    image_embeddings: np.ndarray  # (N, d) unit rows
    vocab_embeddings: np.ndarray  # (V, d) unit rows
    vocab_names: list[str]
    labels: np.ndarray  # (N,) ground-truth class
    styles: np.ndarray  # (N,) nuisance factor
    class_noun_indices: np.ndarray  # (n_classes, nouns_per_class) rows of the vocabulary

    @property
    def n_classes(self) -> int:
        return int(self.class_noun_indices.shape[0])


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def class_proportions(size_profile: str, n_classes: int) -> np.ndarray:
    """The share of each class under a size profile (see the module docstring), summing to 1."""
    if size_profile not in SIZE_PROFILES:
        raise InvalidInputError(f"size_profile must be one of {SIZE_PROFILES}; got {size_profile!r}.")
    if size_profile == "balanced" or n_classes < 2:
        return np.full(n_classes, 1.0 / n_classes)
    if size_profile == "long_tail":
        shares = LONG_TAIL_RATIO ** -(np.arange(n_classes) / (n_classes - 1))
        return shares / shares.sum()
    rest = DOMINANT_TAIL_RATIO ** -(np.arange(n_classes - 1) / max(1, n_classes - 2))
    return np.concatenate([[DOMINANT_SHARE], (1 - DOMINANT_SHARE) * rest / rest.sum()])


def class_counts(size_profile: str, n_classes: int, n_samples: int) -> np.ndarray:
    """Images per class: the profile's shares of ``n_samples`` rounded by largest remainder, at least 1 each."""
    exact = class_proportions(size_profile, n_classes) * n_samples
    counts = np.maximum(np.floor(exact).astype(np.int64), 1)
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    for c in order[:max(0, n_samples - counts.sum())]:
        counts[c] += 1
    while counts.sum() > n_samples:  # the floor of 1 overshot: take from the largest
        counts[counts.argmax()] -= 1
    return counts


def make_clip_like_bed(n_samples: int = 3000, n_classes: int = 10, n_styles: int = 3, dim: int = 128,
                       nouns_per_class: int = 5, n_distractor_nouns: int = 3000, semantic_strength: float = 1.0,
                       style_strength: float = 1.3, style_text_alignment: float = 0.3, gap_strength: float = 1.0,
                       noise: float = 1.8, size_profile: str = "balanced", random_state: int = 0) -> SyntheticBed:
    """Generate a bed; the defaults make image-only k-means clearly worse than TAC (see bench.quality).

    ``size_profile`` shapes the class sizes (:data:`SIZE_PROFILES`); with ``"balanced"`` a seed gives the
    same bed as before the argument existed.
    """
    if size_profile != "balanced" and n_samples < n_classes:
        raise InvalidInputError(f"a {size_profile!r} bed needs at least one image per class: n_samples="
                                f"{n_samples} < n_classes={n_classes}.")
    rng = np.random.default_rng(random_state)
    semantics = _unit(rng.normal(size=(n_classes, dim)))
    styles_dir = _unit(rng.normal(size=(n_styles, dim)))
    gap = _unit(rng.normal(size=dim))

    if size_profile == "balanced":
        labels = rng.integers(n_classes, size=n_samples)
    else:
        labels = rng.permutation(np.repeat(np.arange(n_classes), class_counts(size_profile, n_classes, n_samples)))
    styles = rng.integers(n_styles, size=n_samples)
    class_weight = semantic_strength * rng.uniform(0.6, 1.4, size=(n_samples, 1))
    images = (class_weight * semantics[labels] + style_strength * styles_dir[styles] + gap_strength * gap
              + noise * rng.normal(size=(n_samples, dim)) / np.sqrt(dim))

    class_nouns = _unit(semantics[:, None, :] + 0.35 * rng.normal(size=(n_classes, nouns_per_class, dim)) / np.sqrt(dim))
    style_nouns = _unit(style_text_alignment * styles_dir + rng.normal(size=(n_styles, dim)) / np.sqrt(dim))
    distractors = _unit(rng.normal(size=(n_distractor_nouns, dim)))
    vocab = np.concatenate([class_nouns.reshape(-1, dim), style_nouns, distractors])
    names = ([f"class{c}-noun{j}" for c in range(n_classes) for j in range(nouns_per_class)]
             + [f"style{s}-noun" for s in range(n_styles)]
             + [f"distractor{j}" for j in range(n_distractor_nouns)])
    class_idx = np.arange(n_classes * nouns_per_class).reshape(n_classes, nouns_per_class)
    return SyntheticBed(_unit(images).astype(np.float32), vocab.astype(np.float32), names, labels, styles, class_idx)
