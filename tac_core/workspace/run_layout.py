"""A run's 2-D map (the Review page's scatter): the one its job saved, or for a run from before maps were
saved, one computed from its saved features and saved with it, so it is computed once.

The map depends on the embeddings only, never on a review edit. Its rows are what the job maps: [image
embedding, counterpart], or the image embeddings alone when the run saved no counterparts.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..cluster import projection
from .workspace import Workspace

LAYOUT_ARRAY = "projection"
MAP_FOLDER = "map"  # inside a run's folder: its fitted map (tac_core.run.run_map places later images on it)
TEXT_SPACE_ARRAY = "text_space"  # the run array holding the text rows counterparts are mixed from


def saved_layout_name(params: dict) -> str:
    """What the saved map of a run with these parameters is, in words ("UMAP map" or "PCA picture")."""
    return "PCA picture" if params.get("projection") == "pca" else "UMAP map"


def layout_features(image_embeddings: Optional[np.ndarray], counterparts: Optional[np.ndarray],
                    n: int) -> Optional[np.ndarray]:
    """The rows a run of ``n`` images is mapped from, or None when it saved no image embeddings."""
    if image_embeddings is None or len(image_embeddings) != n:
        return None
    if counterparts is None or len(counterparts) != n:
        return image_embeddings
    return np.concatenate([image_embeddings, counterparts], axis=1)


def compute_layout(workspace: Workspace, run_id: int, features: np.ndarray) -> np.ndarray:
    """The UMAP map of ``features`` (seconds to minutes), saved as the run's ``projection``."""
    coordinates = np.asarray(projection.fit_projection(features).coordinates, np.float32)
    workspace.save_run_array(run_id, LAYOUT_ARRAY, coordinates)
    return coordinates


def preview_layout(features: np.ndarray) -> np.ndarray:
    """An instant PCA picture of ``features``, to show while :func:`compute_layout` runs."""
    return projection.quick_layout(features)


def placeholder_layout(run_id: int, n: int) -> np.ndarray:
    """Stable random positions for a run with nothing to lay out (its points stay selectable)."""
    return np.random.default_rng(int(run_id)).standard_normal((n, 2)).astype(np.float32)
