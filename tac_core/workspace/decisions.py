"""Which images of a review the reviewer has decided, read from the edits in effect of the run's log.

An image is *decided* when an edit in effect (made and not undone) names it explicitly: ``move`` (the
reviewer chose its cluster), ``verify_images`` (kept where it is) or ``exclude``; a later
``verify_images``/``exclude`` with value False (un-verify, include again) takes the decision back. Members of
a verified cluster count as decided too (the reviewer confirmed the whole cluster). Merges, splits and
renames decide nothing about single images. The audit's "n of m reviewed" counts decided queue images, a
decided image leaves the audit queue, and re-clustering keeps moved images where the reviewer put them.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Optional

import numpy as np

from .review_state import ReviewState

DECIDING = ("move", "verify_images", "exclude")


class Decision(NamedTuple):
    """One deciding edit: its kind, the positions of the images it names, and its value (a move is True)."""

    kind: str
    positions: np.ndarray
    value: bool


def decision_of(kind: str, payload: dict, state: ReviewState) -> Optional[Decision]:
    """The decision an edit records, or None for an edit that decides nothing about single images."""
    if kind not in DECIDING:
        return None
    ids = np.asarray(payload["image_ids"], np.int64)
    return Decision(kind, state.positions(ids), bool(payload.get("value", True)))


def decided_mask(state: ReviewState, decisions: Mapping[int, Decision]) -> np.ndarray:
    """Per image: decided by an explicit edit in effect, or a member of a verified cluster."""
    mask = np.zeros(len(state.labels), bool)
    for event_id in sorted(e for e in state.effective if e in decisions):  # edits in effect apply in id order
        kind, positions, value = decisions[event_id]
        mask[positions] = True if kind == "move" else value
    if state.verified_clusters:
        mask |= np.isin(state.labels, list(state.verified_clusters))
    return mask


def moved_mask(state: ReviewState, decisions: Mapping[int, Decision]) -> np.ndarray:
    """Per image: named by a ``move`` in effect (the reviewer chose its cluster)."""
    mask = np.zeros(len(state.labels), bool)
    for event_id in state.effective:
        decision = decisions.get(event_id)
        if decision is not None and decision.kind == "move":
            mask[decision.positions] = True
    return mask
