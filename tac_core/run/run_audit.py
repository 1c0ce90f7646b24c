"""The audit of a run nobody has reviewed yet: the CLI's ``audit.csv``, ranked as the app's Audit page ranks
the same run.

The Audit page decides what the audit scores with
:func:`tac_core.workspace.review_audit.state_audit_inputs`; here that function gets the fresh run's state (no
edit, nothing verified, excluded or decided) and the arrays the job would store (:meth:`ClusterRun.arrays`),
so the run's own centres and, in trained mode, its heads' probabilities are used, exactly as on the page.

``audit.csv`` has one row per clustered image, most suspicious first: ``index`` (its row in
``assignments.csv``), ``path`` (images form only), ``rank`` (0 first), ``score``, one column per signal of
:data:`~tac_core.cluster.audit.SIGNALS`, ``reasons`` and ``suggested_cluster`` (−1: none).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..cluster.audit import SIGNALS, AuditResult, audit
from ..inputs.imageset import storable_text
from ..workspace.review_audit import state_audit_inputs
from ..workspace.review_state import ReviewState
from .results import ClusterRun

AUDIT_FILE = "audit.csv"


def audit_run(run: ClusterRun) -> AuditResult:
    """Score every image of a fresh run as the Audit page would (O(n²) neighbour search: ~5 s at 10k images)."""
    n = len(run.labels)
    assignments = pd.DataFrame({"image_id": np.arange(n), "cluster": run.labels, "confidence": run.confidence})
    state = ReviewState.from_run(assignments, {c: f"cluster {c}" for c in range(run.n_clusters)}, run.anchors)
    return audit(**state_audit_inputs(state, np.zeros(n, bool), run.arrays().get))


def audit_csv(run: ClusterRun, result: AuditResult) -> str:
    """``audit.csv``'s text (module docstring)."""
    order = np.argsort(result.rank, kind="stable")
    frame = pd.DataFrame({"index": order})
    if run.paths is not None:
        frame["path"] = [storable_text(run.paths[i]) for i in order]
    frame["rank"] = result.rank[order]
    frame["score"] = result.score[order]
    for signal in SIGNALS:
        frame[signal] = getattr(result, signal)[order]
    frame["reasons"] = [result.reasons[i] for i in order]
    frame["suggested_cluster"] = result.suggested_cluster[order]
    return frame.to_csv(index=False, float_format="%.6f", lineterminator="\n")
