"""Whether a finished run's cluster sizes look forced: decided once per run and kept beside it.

The test is :func:`tac_core.cluster.sizes.check_forced_sizes` — the run's sorted size profile against the
balance-aware free partition of the same rows ([x, t], the run's K and seed). That reference costs a k-means
with restarts plus the merge–split swaps, so it is computed once: by the run's job right after the result is
stored, or on the first view of a run made before this check existed. It is saved as :data:`SIZE_CHECK_FILE`
in the run's folder, and the Review page only reads it.

The reference, by run (the cheapest way to the same partition):

- free, balance "estimated": the run's own partition *is* the balance-aware free partition (same rows, K, seed
  and restarts), so nothing is computed: its sizes are natural by definition;
- free, balance "uniform": the run's labels are plain k-means with the run's seed, so the reference is those
  labels repaired by the swaps (:func:`~tac_core.cluster.balance.merge_split_repair`), no new k-means;
- trained, and re-clustered runs (their labels come from the reviewer's decisions, not from TAC):
  :func:`~tac_core.cluster.balance.free_size_profile` of the rows.

The verdict is about the run as it was clustered, not as it has been reviewed since.
"""
from __future__ import annotations

import json
from typing import Optional

import numpy as np

from .. import atomic
from ..cluster.sizes import SizeCheck, check_forced_sizes, size_profile
from ..devices import resolve_device
from ..workspace.workspace import Workspace
from .params import RunParams

SIZE_CHECK_FILE = "size_check.json"
FORMAT = 1


def run_size_check(workspace: Workspace, run_id: int, device: Optional[str] = None) -> Optional[SizeCheck]:
    """The run's size verdict: read from :data:`SIZE_CHECK_FILE`, else computed (module docstring) and saved.

    None when the run saved no image embeddings and text counterparts to compute it from. ``device`` defaults
    to the run's own device setting.
    """
    saved = load_size_check(workspace, run_id)
    if saved is not None:
        return saved
    from ..numerics import tac_features  # torch: loaded only to compute a verdict, never to read one
    run = workspace.run(run_id)
    params = RunParams.from_dict(run["params"])
    x = workspace.load_run_array(run_id, "image_embeddings")
    t = workspace.load_run_array(run_id, "counterparts")
    labels = workspace.run_assignments(run_id)["cluster"].to_numpy(np.int64)
    if x is None or t is None or len(x) != len(labels) or len(t) != len(labels):
        return None
    k = int(run["n_clusters"])
    reclustered = "recluster" in run["params"]
    features = None if labels_are_reference(params, reclustered) else tac_features(x, t).astype(np.float32)
    reference = reference_shares(features, labels, k, params, reclustered=reclustered,
                                 device=resolve_device(device or params.device))
    check = check_forced_sizes(labels, reference, params.balance)
    atomic.write_json(workspace.run_dir(run_id) / SIZE_CHECK_FILE, {
        "format": FORMAT, "forced": check.forced, "reason": check.reason, "distance": check.distance,
        "run_shares": check.run_shares.tolist(), "reference_shares": check.reference_shares.tolist()})
    return check


def labels_are_reference(params: RunParams, reclustered: bool = False) -> bool:
    """Whether the run's own labels are the balance-aware free partition (free mode, balance "estimated", not
    re-clustered): then its reference needs no features and no clustering."""
    return params.mode == "free" and params.balance == "estimated" and not reclustered


def reference_shares(features: Optional[np.ndarray], labels: np.ndarray, k: int, params: RunParams,
                     reclustered: bool = False, device="cpu") -> np.ndarray:
    """The balance-aware free partition's shares for a run with these labels and parameters, largest first
    (``features`` may be None when :func:`labels_are_reference`)."""
    from ..cluster import balance  # torch, as above
    if labels_are_reference(params, reclustered):
        repaired = labels
    elif params.mode == "free" and not reclustered:
        repaired, _ = balance.merge_split_repair(features, labels, k, random_state=params.seed, device=device)
    else:
        return balance.free_size_profile(features, k, random_state=params.seed, device=device)
    return np.sort(size_profile(repaired, k))[::-1]


def load_size_check(workspace: Workspace, run_id: int) -> Optional[SizeCheck]:
    """The saved verdict, or None when there is none (or it cannot be read, or is of another format)."""
    try:
        data = json.loads((workspace.run_dir(run_id) / SIZE_CHECK_FILE).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            return None
        return SizeCheck(bool(data["forced"]), str(data["reason"]), float(data["distance"]),
                         np.asarray(data["run_shares"], np.float64), np.asarray(data["reference_shares"], np.float64))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
