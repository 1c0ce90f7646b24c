"""Which points of a 2-D map lie inside the boxes and lassos a user drew on it, over every point.

The map may draw only a sample (:mod:`tac_core.cluster.map_sample`), so a selection is never read off the
drawn points: the drawn region is tested against all of them here. A lasso is a polygon (even-odd rule,
closed implicitly); points are sorted by y once, and each edge tests only the points within its y-span, so a
lasso of a few hundred vertices over a million points takes a fraction of a second.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InvalidInputError


def in_box(xy: np.ndarray, x_range: Sequence[float], y_range: Sequence[float]) -> np.ndarray:
    """Per point: inside the axis-aligned box (edges included; the ranges may come in either order)."""
    (x0, x1), (y0, y1) = sorted(map(float, x_range)), sorted(map(float, y_range))
    x, y = xy[:, 0], xy[:, 1]
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def in_polygon(xy: np.ndarray, xs: Sequence[float], ys: Sequence[float]) -> np.ndarray:
    """Per point: inside the polygon with vertices (``xs``, ``ys``) by the even-odd rule."""
    px, py = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    if px.shape != py.shape or px.ndim != 1:
        raise InvalidInputError(f"a lasso needs as many x as y coordinates; got {px.shape} and {py.shape}.")
    inside = np.zeros(len(xy), bool)
    if len(px) < 3:
        return inside
    candidates = np.flatnonzero(in_box(xy, (px.min(), px.max()), (py.min(), py.max())))
    order = candidates[np.argsort(xy[candidates, 1], kind="stable")]
    x, y = xy[order, 0].astype(np.float64), xy[order, 1].astype(np.float64)
    parity = np.zeros(len(order), bool)
    for x1, y1, x2, y2 in zip(px, py, np.roll(px, -1), np.roll(py, -1)):
        if y1 == y2:
            continue  # a horizontal edge crosses no horizontal ray
        lo, hi = np.searchsorted(y, min(y1, y2), side="left"), np.searchsorted(y, max(y1, y2), side="left")
        if lo == hi:
            continue  # half-open span [min, max): a ray through a vertex counts once
        crossing = x1 + (y[lo:hi] - y1) * (x2 - x1) / (y2 - y1)
        parity[lo:hi] ^= x[lo:hi] < crossing
    inside[order] = parity
    return inside


def in_regions(xy: np.ndarray, boxes: Sequence[dict] = (), lassos: Sequence[dict] = ()) -> np.ndarray:
    """Per point: inside any of ``boxes`` (dicts with ``x`` and ``y`` ranges) or ``lassos`` (dicts with the
    vertices' ``x`` and ``y``), the shapes the Review map's selection reports."""
    inside = np.zeros(len(xy), bool)
    for box in boxes:
        inside |= in_box(xy, box["x"], box["y"])
    for lasso in lassos:
        inside |= in_polygon(xy, lasso["x"], lasso["y"])
    return inside
