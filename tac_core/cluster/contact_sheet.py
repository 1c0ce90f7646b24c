"""Contact sheets: which members of a cluster to show side by side when judging it as a whole.

The typical members show what the cluster is, the ones nearest another centre show where it blurs into a
neighbour, and the farthest ones show what it has swallowed. Used by the Audit page.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from ..numerics import unit_rows_array


@dataclass
class ContactSheet:
    typical: np.ndarray  # closest to the centre, best first
    boundary: np.ndarray  # smallest margin to another centre, closest call first
    farthest: np.ndarray  # farthest from the centre, farthest first


def contact_sheet(labels, cluster: int, features, centers, n: int = 8) -> ContactSheet:
    """Indices for a cluster's contact sheet: its ``n`` most typical members (closest to the centre), the
    ``n`` nearest the boundary (smallest margin to another centre) and the ``n`` farthest from the centre.

    ``features`` and ``centers`` must live in the same space (e.g. [x, t] with ``TAC.cluster_centers_``).
    An image appears in one list only: typical first, then boundary, then farthest.
    """
    labels = np.asarray(labels)
    features, centers = np.asarray(features, dtype=np.float32), np.asarray(centers, dtype=np.float32)
    if features.ndim != 2 or centers.ndim != 2 or features.shape[1] != centers.shape[1]:
        raise InvalidInputError(f"features {features.shape} and centers {centers.shape} must have the same columns.")
    if not 0 <= cluster < len(centers):
        raise InvalidInputError(f"cluster {cluster} has no centre (there are {len(centers)}).")
    members = np.flatnonzero(labels == cluster)
    empty = np.zeros(0, np.int64)
    if len(members) == 0:
        return ContactSheet(empty, empty, empty)
    sims = unit_rows_array(features[members]) @ unit_rows_array(centers).T
    sims[:, np.linalg.norm(centers, axis=1) == 0] = -np.inf
    own = sims[:, cluster].copy()
    sims[:, cluster] = -np.inf
    gap = own - sims.max(axis=1) if len(centers) > 1 else own
    typical = members[np.argsort(-own, kind="stable")[:n]]
    shown = set(typical.tolist())
    boundary = np.array([m for m in members[np.argsort(gap, kind="stable")] if m not in shown][:n], np.int64)
    shown |= set(boundary.tolist())
    farthest = np.array([m for m in members[np.argsort(own, kind="stable")] if m not in shown][:n], np.int64)
    return ContactSheet(typical, boundary, farthest)
