"""Where each cluster's images come from: per cluster, the share of every value of a metadata field (the
Review page's bar chart), and a flag in plain words when one value dominates a cluster far more than it does
the collection; a cluster that holds only line 3 is a finding in itself.

Counted over the images that are not excluded and have a value for the field. A cluster is flagged when at
least :data:`MIN_IMAGES` of its images have a value, one value makes at least :data:`DOMINANT_SHARE` (75 %)
of them, and that share is at least :data:`MIN_LIFT` (1.5) times the value's share of all images: "92 % of
cluster 4 comes from line 3; that line is 25 % of the images" is flagged, 80 % from a line that gives 60 %
of all images is not (a line that big is in most clusters).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import pandas as pd

from .metadata import metadata_table
from .review_state import ReviewState
from .workspace import Workspace

DOMINANT_SHARE = 0.75
MIN_LIFT = 1.5
MIN_IMAGES = 8


@dataclass(frozen=True)
class Dominance:
    """One cluster dominated by one value of one field: how many of its images have it, of how many."""

    cluster: int
    name: str
    field: str
    value: str
    count: int
    size: int
    share: float
    overall: float

    @property
    def text(self) -> str:
        source = value_phrase(self.field, self.value)
        return (f"{self.share * 100:.0f} % of cluster {self.cluster} ({self.name}) comes from {source}; that "
                f"{self.field} is {self.overall * 100:.0f} % of the images.")


def value_phrase(field: str, value: str) -> str:
    """"line 3" for field line and value 3; "line3" alone when the value already says its field."""
    return value if value.casefold().startswith(field.casefold()) else f"{field} {value}"


def field_breakdown(labels: np.ndarray, values) -> pd.DataFrame:
    """Per cluster and value: ``images``, ``share`` of the cluster's images with a value, and ``overall`` share
    of all such images; labels −1 (excluded) and empty values are left out. Sorted by cluster, then count."""
    frame = pd.DataFrame({"cluster": np.asarray(labels, np.int64), "value": np.asarray(values, dtype=object)})
    frame = frame[(frame["cluster"] >= 0) & (frame["value"] != "")]
    counts = frame.groupby(["cluster", "value"], sort=False).size().rename("images").reset_index()
    counts["share"] = counts["images"] / counts.groupby("cluster")["images"].transform("sum")
    overall = frame["value"].value_counts(normalize=True)
    counts["overall"] = counts["value"].map(overall).astype(float)
    return counts.sort_values(["cluster", "images", "value"], ascending=[True, False, True], ignore_index=True)


def dominance(labels: np.ndarray, values, field: str, names: Mapping[int, str]) -> list[Dominance]:
    """The clusters one value of ``field`` dominates (module docstring), biggest share first."""
    breakdown = field_breakdown(labels, values)
    sizes = breakdown.groupby("cluster")["images"].sum()
    top = breakdown.drop_duplicates("cluster")  # sorted by count: each cluster's most common value first
    flags = [Dominance(int(row.cluster), str(names.get(int(row.cluster), f"cluster {row.cluster}")), field,
                       str(row.value), int(row.images), int(sizes[row.cluster]), float(row.share), float(row.overall))
             for row in top.itertuples(index=False)
             if sizes[row.cluster] >= MIN_IMAGES and row.share >= DOMINANT_SHARE and row.share >= MIN_LIFT * row.overall]
    return sorted(flags, key=lambda flag: (-flag.share, flag.cluster))


def state_metadata(workspace: Workspace, state: ReviewState) -> pd.DataFrame:
    """The workspace's metadata fields for a review state's images, one row per position ("" when missing)."""
    return metadata_table(workspace, state.image_ids).reset_index(drop=True)


def dominance_flags(state: ReviewState, table: pd.DataFrame, fields: Optional[list[str]] = None) -> list[Dominance]:
    """Every dominated cluster for each field of ``table`` (:func:`state_metadata`), biggest share first."""
    labels = state.included_labels()
    flags = [flag for field in (fields or list(table.columns))
             for flag in dominance(labels, table[field].to_numpy(), field, state.names)]
    return sorted(flags, key=lambda flag: (-flag.share, flag.cluster, flag.field))
