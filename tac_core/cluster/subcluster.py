"""A 2-way split of a set of rows (spherical k-means, k = 2), deterministic and in a canonical order.

The Review page's automatic split (:mod:`tac_core.workspace.auto_split`) runs it on a cluster's members'
TAC features ``[image, counterpart]`` — the space the run was clustered in, so the halves follow meaning
rather than lighting. The larger half comes first (label 0); equal halves: the half holding the smallest
``order_key``. Fewer than 2 rows, or rows that coincide (k-means finds one group), raise
:class:`~tac_core.errors.InvalidInputError` saying what to do instead.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import InvalidInputError
from .kmeans import spherical_kmeans

MIN_MEMBERS = 2
SEED = 0
N_INIT = 10


def two_way_labels(features: np.ndarray, order_key: Optional[np.ndarray] = None, random_state: int = SEED,
                   n_init: int = N_INIT) -> tuple[np.ndarray, float]:
    """0/1 labels of rows of ``features`` (cosine k-means, k = 2): 0 the larger half, 1 the smaller.

    Ties in size go to the half holding the smallest ``order_key`` (default: the row index). Raises
    :class:`InvalidInputError` when there are fewer than 2 rows or k-means finds a single group.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) < MIN_MEMBERS:
        raise InvalidInputError(f"a split needs at least {MIN_MEMBERS} images; this cluster has {len(features)}.")
    if not np.isfinite(features).all():
        raise InvalidInputError("the features of this cluster hold NaN or infinite values; re-run the clustering.")
    result = spherical_kmeans(features, 2, n_init=n_init, random_state=random_state)
    labels = result.labels
    sizes = np.bincount(labels, minlength=2)
    if sizes.min() == 0:
        raise InvalidInputError("the images of this cluster are too alike to split automatically; select the "
                                "images to split off on the map or in the gallery and split them off by hand.")
    key = np.arange(len(labels)) if order_key is None else np.asarray(order_key)
    first = [key[labels == half].min() for half in (0, 1)]
    keep_half = 0 if (sizes[0], -first[0]) > (sizes[1], -first[1]) else 1
    return (labels != keep_half).astype(np.int64), result.objective
