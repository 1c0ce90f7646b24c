"""What a bulk selection takes during a review: never an excluded image, and every image inside a map region.

Selecting is view state, not a decision, but it decides what the next decision touches: "Select this page",
"Select whole cluster" and a box or lasso on the map select many images at once, and an excluded image among
them would be verified or moved along with the rest. So every bulk way to select goes through
:func:`bulk_selectable`; an excluded image is selected only by ticking it on its own (to include it again).
A region drawn on a map that shows a sample is resolved over every point of the run
(:func:`region_selection`), so the counts the page shows are exact.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from ..cluster.map_regions import in_regions
from .review_state import ReviewState


def bulk_selectable(state: ReviewState, positions) -> np.ndarray:
    """The image ids at ``positions`` that a bulk selection may take: those not excluded."""
    positions = np.asarray(positions, np.int64)
    return state.image_ids[positions[~state.excluded[positions]]]


def region_selection(state: ReviewState, xy: np.ndarray, boxes: Sequence[dict] = (), lassos: Sequence[dict] = (),
                     clusters: Optional[Iterable[int]] = None, shown: Optional[np.ndarray] = None) -> np.ndarray:
    """Image ids of every image whose map point (``xy``, by position) lies in one of the regions, in one of
    ``clusters`` (all when None), among the ``shown`` positions (those that pass the map's filter; all when
    None), and not excluded."""
    inside = in_regions(xy, boxes, lassos)
    if clusters is not None:
        inside &= np.isin(state.labels, np.fromiter(clusters, np.int64))
    if shown is not None:
        inside &= np.isin(np.arange(len(inside)), shown)
    return bulk_selectable(state, np.flatnonzero(inside))
