"""Cluster size profiles and the verdict on a run's sizes: numpy only, so that the pages showing sizes (Review)
load no torch. The balance-aware clustering that produces the reference profile is :mod:`.balance`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import BALANCES
from ..errors import InvalidInputError

UNEVEN_DISTANCE = 0.15  # profile distance (total variation) beyond which sizes count as unequal / forced


def check_balance(balance) -> None:
    if balance not in BALANCES:
        raise InvalidInputError(f"balance must be one of {BALANCES}; got {balance!r}.")


def size_profile(labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Each cluster's share of the samples (K values summing to 1)."""
    return np.bincount(np.asarray(labels), minlength=n_clusters) / max(1, len(labels))


def profile_distance(shares_a: np.ndarray, shares_b: np.ndarray) -> float:
    """Total variation between two size profiles compared largest with largest: 0 (same sizes) .. 1."""
    a = np.sort(np.asarray(shares_a, dtype=np.float64))[::-1]
    b = np.sort(np.asarray(shares_b, dtype=np.float64))[::-1]
    return 0.5 * float(np.abs(a - b).sum())


def uneven(shares: np.ndarray, threshold: Optional[float] = None) -> bool:
    """Whether cluster shares are too unequal for the equal-size assumption: their distance from equal
    sizes exceeds ``threshold`` (:data:`UNEVEN_DISTANCE`, the line :func:`check_forced_sizes` draws too)."""
    shares = np.asarray(shares, dtype=np.float64)
    return profile_distance(shares, np.full(len(shares), 1.0 / len(shares))) > (
        UNEVEN_DISTANCE if threshold is None else threshold)


RARE_SHARE = 0.03


@dataclass(frozen=True)
class SizeCheck:
    """Whether a run's cluster sizes look forced, why in words, and the two sorted profiles compared."""
    forced: bool
    reason: str
    distance: float  # total variation between the sorted profiles, 0 (same) .. 1
    run_shares: np.ndarray  # sorted largest first
    reference_shares: np.ndarray  # sorted largest first


def _describe(shares: np.ndarray) -> str:
    rare = int((shares[shares > 0] < RARE_SHARE).sum())
    text = f"largest {100 * shares[0]:.0f} %, smallest {100 * shares[shares > 0][-1]:.1f} %"
    return text + (f", {rare} under {100 * RARE_SHARE:.0f} %" if rare else "")


def check_forced_sizes(run_labels: np.ndarray, reference_shares: np.ndarray, balance: str = "uniform",
                       threshold: float = UNEVEN_DISTANCE) -> SizeCheck:
    """Compare a run's cluster sizes with the balance-aware free partition's
    (:func:`~tac_core.cluster.balance.free_size_profile`).

    Sizes look forced when the run's sorted size profile is more even than the reference's and differs from
    it by more than ``threshold`` in total variation (half the summed absolute difference of the shares,
    largest with largest). On the synthetic beds (3,000 images, 10 classes, 3 beds each) uniform runs on
    the dominant bed measured 0.31–0.38, every run on the balanced bed at most 0.04.
    """
    check_balance(balance)
    reference = np.sort(np.asarray(reference_shares, dtype=np.float64))[::-1]
    k = len(reference)
    labels = np.asarray(run_labels)
    run = np.sort(size_profile(labels[labels >= 0], k))[::-1]
    if len(np.unique(labels[labels >= 0])) > k:
        raise InvalidInputError(f"the run has more clusters ({len(np.unique(labels[labels >= 0]))}) than the "
                                f"reference profile ({k}); compute the reference with the run's K.")
    distance = profile_distance(run, reference)
    evener = run[0] < reference[0]
    forced = distance > threshold and evener
    if forced:
        cause = ("it was made with balance='uniform', which pushes clusters towards equal sizes"
                 if balance == "uniform" else "the heads drifted towards equal sizes")
        reason = (f"Cluster sizes look forced: this run's clusters are {_describe(run)}, but the same images "
                  f"clustered without the equal-size assumption give {_describe(reference)}. {cause.capitalize()}: "
                  f"a large group is probably split over several clusters (see the possible merges) and rare "
                  f"ones hidden in others."
                  + (" Re-run with balance='estimated'." if balance == "uniform" else ""))
    else:
        reason = (f"Cluster sizes look natural: {_describe(run)}, close to what clustering without the "
                  f"equal-size assumption gives ({_describe(reference)}).")
    return SizeCheck(bool(forced), reason, distance, run, reference)
