"""The audit of a review session: what is scored, by which rules, and the queue it gives.

:func:`tac_core.cluster.audit.audit` scores arrays; this module decides what those arrays are for a run being
reviewed (:func:`audit_inputs`), from the session's current state:

- labels: the current labels, excluded images as −1 (not audited, and nobody's cluster);
- verified (scored as neighbours, never queued): verified itself, a member of a verified cluster, or decided
  (:meth:`~tac_core.workspace.review.ReviewSession.decided`);
- centres: the run's saved centres only while no label was edited, else the means of the current clusters;
- head probabilities (trained runs): per current cluster, the sum over the run clusters it is made of (a
  merge adds its parts' columns). When a split created a cluster the heads never saw, none: free-mode scores.

Images an intake added (:mod:`tac_core.workspace.intake`) are audited with the run's: their arrays come from
:func:`~tac_core.workspace.intake.review_arrays`, and then the heads' probabilities are not used (the heads
never saw them). The queue puts them first when they need a person (:func:`intake_priority`): new images in
the unsorted bucket (possibly a new defect, most novel first), then new images whose score is at least
:data:`DOUBTFUL_SCORE`, then everything else by score; their reasons say so.

The queue (:class:`AuditQueue`) holds the audited images most suspicious first. It is a snapshot of one
review state: a decided image leaves it (:meth:`AuditQueue.pending`) without rescoring, since scoring is
O(n²) in neighbour search. Reasons name clusters by id and images by position; callers name them for display.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import numpy as np

from ..cluster.audit import REASON_MIN, AuditResult, audit
from ..errors import InvalidInputError
from ..numerics import cluster_unit_means
from .intake import RunArrays, review_arrays
from .review import ReviewSession
from .review_state import ReviewState

AUDIT_ARRAYS = ("image_embeddings", "counterparts")
DOUBTFUL_SCORE = REASON_MIN  # the score at which the audit names a signal
NOVEL, DOUBTFUL, LATER = 0, 1, 2
HEAD_ARRAYS = ("probabilities", "text_probabilities")



@dataclass(frozen=True)
class AuditQueue:
    """The audit of one review state: ``queue`` lists audited positions most suspicious first; the other
    arrays are per position (``rank`` −1 when not audited, ``suggested`` −1 when there is no suggestion)."""

    queue: np.ndarray
    rank: np.ndarray
    score: np.ndarray
    suggested: np.ndarray
    reasons: list[str]
    confidence: np.ndarray
    mode: str

    @classmethod
    def from_result(cls, result: AuditResult, priority: Optional[np.ndarray] = None) -> "AuditQueue":
        """The queue of a scored audit; ``priority`` (per image, lower first) orders groups before the score."""
        order = result.order if priority is None else np.lexsort((result.rank, priority))
        queue = order[result.audited[order]]
        rank = np.full(len(result.audited), -1, np.int64)
        rank[queue] = np.arange(len(queue))
        return cls(queue, rank, result.score, result.suggested_cluster, result.reasons, result.confidence,
                   result.mode)

    def pending(self, decided: np.ndarray) -> np.ndarray:
        """The queue without the images decided since it was scored, in queue order."""
        return self.queue[~decided[self.queue]]

    def progress(self, decided: np.ndarray) -> tuple[int, int]:
        """(reviewed, total) for "n of m reviewed": every decided image counts as reviewed, and the total is
        those plus the queue's images still pending. A queue scored afresh leaves decided images out, so
        counting only decided *queue* images would restart at 0 in every new browser session."""
        done = int(np.count_nonzero(decided))
        return done, done + len(self.pending(decided))

    def waiting(self, decided: np.ndarray, labels: np.ndarray, clusters) -> np.ndarray:
        """Per cluster id of ``clusters``: how many of its images (by ``labels`` now) are still pending."""
        counts = np.bincount(labels[self.pending(decided)])
        return np.array([counts[c] if c < len(counts) else 0 for c in clusters], np.int64)


def run_arrays(session: ReviewSession, arrays: Optional[RunArrays] = None) -> RunArrays:
    """The arrays of the session's images: the run's (read from the workspace, or by ``arrays``, a caller's cached
    loader of run arrays) and those of the intakes in effect."""
    return review_arrays(session.state, arrays or partial(session.workspace.load_run_array, session.run_id))


def can_audit(session: ReviewSession, arrays: Optional[RunArrays] = None) -> bool:
    """Whether the run saved what the audit needs: one image embedding and one counterpart per image."""
    arrays = run_arrays(session, arrays)
    n = len(session.state.labels)
    return all(a is not None and len(a) == n for a in (arrays(name) for name in AUDIT_ARRAYS))


def audit_inputs(session: ReviewSession, decided: Optional[np.ndarray] = None,
                 arrays: Optional[RunArrays] = None) -> dict:
    """Keyword arguments of :func:`~tac_core.cluster.audit.audit` for the session's state now (module docstring).

    ``decided`` defaults to ``session.decided()``; ``arrays`` (run arrays by name) to the workspace's.
    """
    arrays = run_arrays(session, arrays)
    if not can_audit(session, arrays):
        raise InvalidInputError(f"run {session.run_id} has no saved image embeddings and text counterparts, which "
                                "the audit needs; run the clustering again.")
    return state_audit_inputs(session.state, session.decided() if decided is None else decided, arrays)


def state_audit_inputs(state: ReviewState, decided: np.ndarray, arrays: RunArrays) -> dict:
    """:func:`audit_inputs` for a review state and its run's arrays (the command line audits a fresh run so,
    with nothing decided)."""
    centers = None if state.labels_edited() else arrays("cluster_centers")
    inputs = {"image_embeddings": arrays("image_embeddings"), "counterparts": arrays("counterparts"),
              "labels": state.included_labels(), "cluster_centers": centers,
              "verified": state.counts_as_verified() | decided}
    p, q = (grouped_probabilities(arrays(name), state) for name in HEAD_ARRAYS)
    if p is not None and q is not None:
        inputs.update(probabilities=p, text_probabilities=q)
    return inputs


def audit_session(session: ReviewSession, decided: Optional[np.ndarray] = None,
                  arrays: Optional[RunArrays] = None) -> AuditQueue:
    """Score the session's run as it is reviewed now (O(n²) neighbour search: seconds to a minute at 50k)."""
    result = audit(**audit_inputs(session, decided, arrays))
    priority = intake_priority(session.state, result.score)
    for i in np.flatnonzero(priority < LATER):
        result.reasons[i] = _intake_reason(session.state, i) + "; " + result.reasons[i]
    return AuditQueue.from_result(result, priority)


def intake_priority(state: ReviewState, score: np.ndarray) -> np.ndarray:
    """Per image, its group in the queue: :data:`NOVEL` (new and unsorted), :data:`DOUBTFUL` (new, score at least
    :data:`DOUBTFUL_SCORE`) or :data:`LATER` (everything else)."""
    new = state.new_mask()
    priority = np.full(len(state.labels), LATER, np.int64)
    priority[new & (score >= DOUBTFUL_SCORE)] = DOUBTFUL
    if state.bucket is not None:
        priority[new & (state.labels == state.bucket)] = NOVEL
    return priority


def _intake_reason(state: ReviewState, position: int) -> str:
    if state.bucket is not None and state.labels[position] == state.bucket:
        return f"new, and unlike every cluster (novelty {state.novelty[position]:.1f}): possibly a new defect"
    return "new, and doubtful"


def grouped_probabilities(p: Optional[np.ndarray], state: ReviewState) -> Optional[np.ndarray]:
    """Head probabilities per current cluster id (the sum of the run clusters it is made of), or None when there
    are none or a cluster exists that no run cluster makes (a split-off one)."""
    if p is None or any(not state.anchor_sources.get(c) for c in state.names):
        return None
    out = np.zeros((len(p), max(state.names) + 1), np.float32)
    for cluster, sources in state.anchor_sources.items():
        cols = [s for s in sources if s < p.shape[1]]
        if cols:
            out[:, cluster] = p[:, cols].sum(axis=1)
    return out


def current_centers(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Normalised means of the current clusters (rows by id; −1 labels left out), e.g. for contact sheets."""
    kept = labels >= 0
    return cluster_unit_means(features[kept], labels[kept], int(labels.max(initial=0)) + 1)
