"""A run's review log as a table: who did what, when, to which clusters and how many images, undone or not.

:func:`touched` says what one edit touches, judged on the state *before* it is applied (a move touches the
clusters its images leave and the one they join); :class:`~tac_core.workspace.review.ReviewSession` records
it with every event it applies, and an undo or redo touches what its target touched; an approval or its
withdrawal touches its cluster. :func:`events_table` is what the command line's ``workspace history`` prints and
the History page shows, filtered by user, cluster and action.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from .review_state import ReviewState

EVENT_TABLE_COLUMNS = ("event_id", "time", "session", "user", "action", "clusters", "images", "undone",
                       "description")


def touched(kind: str, payload: dict, state: ReviewState) -> tuple[list[int], int]:
    """(the cluster ids, the number of images) an edit of ``kind`` touches in ``state`` before it is applied."""
    if kind in ("rename", "approve", "withdraw"):
        return [payload["cluster"]], 0
    if kind == "intake":  # its images join the state only when it is applied
        return sorted(set(payload["clusters"])), len(payload["image_ids"])
    if kind in ("merge", "verify_cluster"):
        clusters = [*payload["sources"], payload["target"]] if kind == "merge" else [payload["cluster"]]
        moving = payload["sources"] if kind == "merge" else clusters
        return clusters, int(np.isin(state.labels, moving).sum())
    positions = state.positions(np.asarray(payload.get("image_ids", []), np.int64))
    clusters = set(state.labels[positions].tolist())
    if kind == "split":
        clusters.add(payload["new_cluster"])
    elif kind == "move":
        clusters.add(payload["cluster"])
    return sorted(clusters), len(positions)


def events_table(session, users: Iterable[str] = (), clusters: Iterable[int] = (),
                 actions: Iterable[str] = ()) -> pd.DataFrame:
    """Every event of the session's run, oldest first (:data:`EVENT_TABLE_COLUMNS`); ``user`` is empty where
    the log has no user, ``clusters`` lists ids separated by ``"; "``. Each filter given keeps only the events
    made by one of ``users``, touching one of ``clusters`` or of one of ``actions`` (``kind``: "rename",
    "approve", "undo", ...); an empty filter keeps every event."""
    session.refresh()
    users, clusters, actions = set(users), set(clusters), set(actions)
    rows = [(entry["event_id"], entry["ts"], entry["session"], entry.get("user") or "", entry["kind"],
             "; ".join(str(c) for c in entry["clusters"]), entry["images"], entry["undone"], entry["text"])
            for entry in session.history()
            if (not users or entry.get("user") in users) and (not actions or entry["kind"] in actions)
            and (not clusters or clusters.intersection(entry["clusters"]))]
    return pd.DataFrame(rows, columns=list(EVENT_TABLE_COLUMNS))
