"""A synthetic CLIP-like test bed with ground truth, for tests and benchmarks without model weights.

It reproduces the situation TAC is built for:
- each class has a semantic direction shared by the image and text spaces (CLIP's alignment), and a few
  nouns (synonyms) lie close to it;
- a nuisance "style" factor (lighting, background, camera) is shared across classes and is *stronger* in
  image space than the class signal, so k-means on images alone groups by style;
- style has nouns too, but they describe it only weakly (text sees objects better than lighting);
- every image carries a common offset (the modality gap), and thousands of distractor nouns fill the
  vocabulary, as WordNet does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def make_clip_like_bed(n_samples: int = 3000, n_classes: int = 10, n_styles: int = 3, dim: int = 128,
                       nouns_per_class: int = 5, n_distractor_nouns: int = 3000, semantic_strength: float = 1.0,
                       style_strength: float = 1.3, style_text_alignment: float = 0.3, gap_strength: float = 1.0,
                       noise: float = 1.8, random_state: int = 0) -> SyntheticBed:
    """Generate a bed; the defaults make image-only k-means clearly worse than TAC (see bench.quality)."""
    rng = np.random.default_rng(random_state)
    semantics = _unit(rng.normal(size=(n_classes, dim)))
    styles_dir = _unit(rng.normal(size=(n_styles, dim)))
    gap = _unit(rng.normal(size=dim))

    labels = rng.integers(n_classes, size=n_samples)
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
