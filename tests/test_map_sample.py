"""What the Review map draws and selects, without the app: a stable, density-preserving sample with every
point in focus; thumbnails spread over each cluster in levels; boxes and lassos resolved over every point."""
from __future__ import annotations

import numpy as np
import pytest

from tac_core.cluster.map_regions import in_box, in_polygon, in_regions
from tac_core.cluster.map_sample import draw_ranks, sample_positions, thumbnail_picks
from tac_core.errors import InvalidInputError


def brute_force_polygon(xy: np.ndarray, xs, ys) -> np.ndarray:
    """The textbook ray casting, one point at a time (the reference)."""
    out = []
    for px, py in xy.tolist():
        inside = False
        for i in range(len(xs)):
            x1, y1, x2, y2 = xs[i], ys[i], xs[(i + 1) % len(xs)], ys[(i + 1) % len(xs)]
            if (y1 > py) != (y2 > py) and px < x1 + (py - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        out.append(inside)
    return np.array(out)


def test_small_runs_are_drawn_whole():
    labels = np.repeat([0, 1, 2], 10)
    assert np.array_equal(sample_positions(labels, draw_ranks(30), budget=30), np.arange(30))


def test_sample_keeps_each_clusters_share_and_small_clusters_visible():
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.zeros(80_000, int), np.ones(19_700, int), np.full(300, 2), np.full(0, 3)])
    labels[rng.choice(len(labels), 500, replace=False)] = -1  # excluded images are a group of their own
    ranks = draw_ranks(len(labels), seed=3)
    drawn = sample_positions(labels, ranks, budget=10_000, min_per_cluster=200)
    assert np.all(np.diff(drawn) > 0)  # sorted, unique
    counts = {c: int(np.sum(labels[drawn] == c)) for c in (-1, 0, 1, 2)}
    share = {c: np.sum(labels == c) / len(labels) for c in (-1, 0, 1, 2)}
    assert counts[0] == round(share[0] * 10_000) and counts[1] == round(share[1] * 10_000)  # same rate
    assert counts[2] == 200 and counts[-1] == 200  # small groups: at least min_per_cluster
    # within a cluster the lowest ranks are taken: a stable sample that an edit changes only where it moves points
    for c in (0, 1):
        members = np.flatnonzero(labels == c)
        assert set(drawn[labels[drawn] == c]) == set(members[np.argsort(ranks[members])[:counts[c]]])
    moved = labels.copy()
    moved[drawn[labels[drawn] == 1][:5]] = 2
    again = sample_positions(moved, ranks, budget=10_000, min_per_cluster=200)
    assert len(np.setdiff1d(drawn, again)) <= 5 + 5


def test_focus_points_are_all_drawn_up_to_their_budget():
    labels = np.repeat(np.arange(10), 10_000)
    ranks = draw_ranks(len(labels))
    focus = labels == 4
    drawn = sample_positions(labels, ranks, budget=5_000, focus=focus)
    assert np.isin(np.flatnonzero(focus), drawn).all()
    assert np.sum(labels[drawn] == 3) == 500
    capped = sample_positions(labels, ranks, budget=5_000, focus=np.flatnonzero(focus), focus_budget=2_000)
    assert np.sum(labels[capped] == 4) == 2_000
    with pytest.raises(InvalidInputError, match="one entry per point"):
        sample_positions(labels, ranks[:5])


def test_a_filter_limits_the_sample_and_its_focus():
    labels = np.repeat(np.arange(10), 10_000)
    ranks = draw_ranks(len(labels))
    shown = np.flatnonzero(np.arange(len(labels)) % 2 == 0)  # a metadata filter keeps every other image
    drawn = sample_positions(labels, ranks, budget=5_000, focus=labels == 4, shown=shown)
    assert np.isin(drawn, shown).all() and np.all(np.diff(drawn) > 0)
    assert np.isin(shown[labels[shown] == 4], drawn).all()  # the open cluster whole, as far as it is shown
    assert np.sum(labels[drawn] == 3) == 500  # the rest at the rate budget / shown points
    small = shown[:3_000]  # a filter that leaves fewer points than the budget: all of them
    assert np.array_equal(sample_positions(labels, ranks, budget=5_000, shown=small), small)


def test_thumbnails_are_confident_spread_and_levelled():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 300)
    xy = rng.standard_normal((900, 2)) + labels[:, None] * 10
    confidence = rng.random(900)
    picks, levels = thumbnail_picks(xy, labels, confidence, budget=21 * 3)
    assert len(picks) == 63 and len(set(picks.tolist())) == 63
    for c in range(3):
        mine = picks[labels[picks] == c]
        assert len(mine) == 21
        assert mine[0] == np.flatnonzero(labels == c)[np.argmax(confidence[labels == c])]  # most confident first
        top = np.flatnonzero(labels == c)[np.argsort(-confidence[labels == c])[:200]]
        assert np.isin(mine, top).all()
        assert np.bincount(levels[labels[picks] == c]).tolist() == [3, 6, 12]
    # spread: level-0 picks of a cluster lie farther apart than random members would
    first = picks[(labels[picks] == 0) & (levels == 0)]
    spread = np.min([np.linalg.norm(xy[a] - xy[b]) for i, a in enumerate(first) for b in first[i + 1:]])
    assert spread > 1.0
    few, _ = thumbnail_picks(xy, labels, confidence, budget=2)  # fewer than clusters: the largest get one each
    assert len(few) == 2
    small = np.repeat([0, 1], [9, 300])
    picks, levels = thumbnail_picks(xy[:309], small, confidence[:309], budget=42)
    assert np.bincount(levels[small[picks] == 0]).tolist() == [2, 2, 5]  # a small cluster: few large ones too


def test_box_and_polygon_select_every_point_inside():
    rng = np.random.default_rng(2)
    xy = rng.uniform(-5, 5, (20_000, 2)).astype(np.float32)
    box = in_box(xy, [2, -1], [-3, 0.5])  # ranges in either order
    assert np.array_equal(box, (xy[:, 0] >= -1) & (xy[:, 0] <= 2) & (xy[:, 1] >= -3) & (xy[:, 1] <= 0.5))
    # a lasso: a star-shaped polygon with a concave side
    angles = np.linspace(0, 2 * np.pi, 41)[:-1]
    radius = 3 + 1.5 * np.sin(5 * angles)
    xs, ys = (radius * np.cos(angles)).tolist(), (radius * np.sin(angles)).tolist()
    assert np.array_equal(in_polygon(xy[:3000], xs, ys), brute_force_polygon(xy[:3000], xs, ys))
    square = in_polygon(xy, [-1, 2, 2, -1], [-3, -3, 0.5, 0.5])
    inner = (xy[:, 0] > -1) & (xy[:, 0] < 2) & (xy[:, 1] > -3) & (xy[:, 1] < 0.5)
    assert np.array_equal(square & inner, inner) and (square & ~box).sum() == 0
    union = in_regions(xy, boxes=[{"x": [2, -1], "y": [-3, 0.5]}], lassos=[{"x": xs, "y": ys}])
    assert np.array_equal(union, box | in_polygon(xy, xs, ys))
    assert not in_polygon(xy, [0, 1], [0, 1]).any()  # fewer than 3 vertices: nothing
    with pytest.raises(InvalidInputError, match="as many x as y"):
        in_polygon(xy, [0, 1, 2], [0, 1])


def test_a_million_points_box_and_lasso_are_exact():
    rng = np.random.default_rng(3)
    xy = rng.standard_normal((1_000_000, 2)).astype(np.float32)
    box = in_regions(xy, boxes=[{"x": [-0.5, 0.25], "y": [0.1, 1.0]}])
    x, y = xy[:, 0], xy[:, 1]
    assert box.sum() == np.sum((x >= -0.5) & (x <= 0.25) & (y >= 0.1) & (y <= 1.0))
    angles = np.linspace(0, 2 * np.pi, 301)[:-1]
    lasso = in_polygon(xy, np.cos(angles) * 1.2, np.sin(angles) * 0.8)
    ellipse = (x / 1.2) ** 2 + (y / 0.8) ** 2
    assert lasso[ellipse < 0.995].all() and not lasso[ellipse > 1.0].any()  # the 300-gon lies inside the ellipse
