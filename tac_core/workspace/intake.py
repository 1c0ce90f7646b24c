"""Intake: images added to a workspace after a run, sorted into the run's *reviewed* clusters as one undoable
edit, so the verified taxonomy keeps working after the first review.

What an intake does (:func:`record_intake`; :mod:`tac_core.run.intake` embeds the images and places them on
the run's map first):

- The new images' arrays (image embeddings, counterparts, map coordinates) are saved as run arrays of a
  *batch*, ``intake.<batch>.<name>``, before the event that adds them is committed, so an event in the log
  always has its arrays. :func:`review_arrays` serves a review state's arrays: the run's own followed by
  those of the batches in effect, in position order.
- Inside the event's write transaction (after other sessions' edits) the state's clusters become
  :class:`~tac_core.cluster.prototypes.ClusterPrototypes` (:func:`state_prototypes`): every cluster but the
  bucket, excluded images left out, verified members preferred. Each new image goes to its nearest cluster
  with a confidence, or, when its novelty is above the calibrated threshold, to the unsorted bucket
  (:data:`BUCKET_NAME`), a cluster the first intake that needs it creates and later intakes reuse.
- One ``intake`` event records the ids, clusters, confidences and novelties; replay recomputes nothing.
  Earlier edits, verified images and the run's own images are never changed; undo removes the batch again.

:func:`split_unsorted` turns a set of images of one cluster (typically the bucket) into a new cluster named
from their own text anchors.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ..cluster.prototypes import ClusterPrototypes, fit_prototypes
from ..errors import InvalidInputError
from ..numerics import unit_rows_array
from .review import Edit, ReviewSession
from .review_state import ReviewState
from .run_layout import TEXT_SPACE_ARRAY
from .workspace import Workspace

BUCKET_NAME = "unsorted: possibly new defect"
BATCH_ARRAYS = ("image_embeddings", "counterparts", "projection")  # what an intake saves per image
PER_IMAGE_ARRAYS = (*BATCH_ARRAYS, "confidence", "margin", "probabilities", "text_probabilities")
DEFAULT_TAU = 0.005
ANCHORS_KEPT = 10

RunArrays = Callable[[str], Optional[np.ndarray]]  # a run array by name, None when the run has none


@dataclass(frozen=True)
class IntakeResult:
    """What an intake recorded: the edit, the images added, how many went to the bucket, and per cluster id how
    many joined it."""

    edit: Edit
    image_ids: np.ndarray
    novel: int
    per_cluster: dict[int, int]


def batch_array_name(batch: str, name: str) -> str:
    return f"intake.{batch}.{name}"


def review_arrays(state: ReviewState, arrays: RunArrays) -> RunArrays:
    """The arrays of ``state``'s images: a per-image array is the run's rows followed by each intake batch in
    effect (None when a part is missing, or for arrays an intake does not make: head probabilities, margins);
    other arrays (centres, text space, heads) are the run's. Each array is put together once per call."""
    batches, n_run = tuple(state.batches), state.n_run
    made: dict[str, Optional[np.ndarray]] = {}

    def get(name: str) -> Optional[np.ndarray]:
        if name not in made:
            base = arrays(name)
            if not batches or name not in PER_IMAGE_ARRAYS or base is None:
                made[name] = base
            elif name not in BATCH_ARRAYS or len(base) < n_run:
                made[name] = None
            else:
                parts = [base[:n_run]] + [arrays(batch_array_name(batch, name)) for batch, _, _ in batches]
                ok = all(p is not None and len(p) == count for p, (_, _, count) in zip(parts[1:], batches))
                made[name] = np.concatenate(parts) if ok else None
        return made[name]
    return get


def session_arrays(session: ReviewSession) -> RunArrays:
    """:func:`review_arrays` of the session's state, read from the workspace."""
    return review_arrays(session.state, lambda name: session.workspace.load_run_array(session.run_id, name))


def run_text_space(workspace: Workspace, run_id: int) -> tuple[np.ndarray, float]:
    """The rows the run's counterparts are mixed from and its τ, or :class:`InvalidInputError` for an old run."""
    text_space = workspace.load_run_array(run_id, TEXT_SPACE_ARRAY)
    if text_space is None:
        raise InvalidInputError(f"run {run_id} was computed before new images could be placed in it (it has no "
                                "saved text space); run the clustering again.")
    return text_space, float(workspace.run_summary(run_id).get("tau", DEFAULT_TAU))


def state_prototypes(state: ReviewState, arrays: RunArrays, text_space: np.ndarray, tau: float,
                     device: str = "cpu") -> ClusterPrototypes:
    """The state's clusters as prototypes: excluded images and the bucket left out, verified members preferred."""
    x, t = arrays("image_embeddings"), arrays("counterparts")
    if x is None or t is None or len(x) != len(state.labels):
        raise InvalidInputError("this run has no saved image embeddings and text counterparts for all its images, "
                                "which sorting new images needs; run the clustering again.")
    skip = (state.bucket,) if state.bucket in state.names else ()
    return fit_prototypes(x, t, state.included_labels(), text_space, tau, prefer=state.counts_as_verified(),
                          skip=skip, device=device)


def record_intake(session: ReviewSession, image_ids, image_embeddings: np.ndarray, counterparts: np.ndarray,
                  coordinates: Optional[np.ndarray] = None, device: str = "cpu") -> IntakeResult:
    """Add images (ids with their embeddings, counterparts from the run's text space and, when the run has a
    map, their places on it) to the session's review as one ``intake`` event (see the module docstring)."""
    ids = np.asarray(image_ids, np.int64).reshape(-1)
    x = np.asarray(image_embeddings, np.float32)
    if x.shape[0] != len(ids) or counterparts.shape != x.shape or (coordinates is not None
                                                                    and np.shape(coordinates) != (len(ids), 2)):
        raise InvalidInputError(f"{len(ids)} image ids need as many embeddings, counterparts and map places; got "
                                f"{x.shape}, {counterparts.shape} and {np.shape(coordinates)}.")
    workspace, run_id = session.workspace, session.run_id
    workspace.require("edit", session.user)  # before any array is written (the event checks again)
    text_space, tau = run_text_space(workspace, run_id)
    batch = secrets.token_hex(4)
    saved = {"image_embeddings": x, "counterparts": np.asarray(counterparts, np.float32)}
    if coordinates is not None:
        saved["projection"] = np.asarray(coordinates, np.float32)
    for name, array in saved.items():
        workspace.save_run_array(run_id, batch_array_name(batch, name), array)
    load = (lambda name: workspace.load_run_array(run_id, name))

    def build(state: ReviewState) -> dict:
        result = state_prototypes(state, review_arrays(state, load), text_space, tau, device).assign(x, device)
        bucket = state.bucket if state.bucket in state.names else None
        new_bucket = bool(result.novel.any()) and bucket is None
        if new_bucket:
            bucket = state.next_cluster
        clusters = np.where(result.novel, -1 if bucket is None else bucket, result.cluster)
        return {"batch": batch, "image_ids": ids.tolist(), "clusters": clusters.tolist(),
                "confidence": np.round(result.confidence, 4).tolist(), "novelty": np.round(result.novelty, 3).tolist(),
                "bucket": bucket, "new_bucket": new_bucket, "bucket_name": BUCKET_NAME}

    edit = session.intake(build)
    state = session.state
    added = state.labels[state.batches[-1][1]:]
    bucket = state.bucket
    counts = {int(c): int(n) for c, n in zip(*np.unique(added, return_counts=True))}
    return IntakeResult(edit, ids, counts.get(bucket, 0) if bucket is not None else 0, counts)


def text_terms(session: ReviewSession) -> Optional[list[str]]:
    """The names of the run's text space rows (its job saves them), or None for a run that did not."""
    summary = session.workspace.run_summary(session.run_id)
    text_space = session.workspace.load_run_array(session.run_id, TEXT_SPACE_ARRAY)
    for key in ("text_space_terms", "selected_terms"):  # before domain terms were saved: the selected nouns alone
        terms = summary.get(key)
        if terms and text_space is not None and len(terms) == len(text_space):
            return list(terms)
    return None


def selection_anchors(counterparts: np.ndarray, text_space: np.ndarray, terms: Sequence[str],
                      top: int = ANCHORS_KEPT) -> list[tuple[str, float]]:
    """The terms closest to the normalised mean of these images' counterparts, best first."""
    centroid = unit_rows_array(np.asarray(counterparts, np.float64).sum(axis=0, keepdims=True))[0]
    scores = unit_rows_array(text_space) @ centroid
    order = np.argsort(-scores, kind="stable")[:top]
    return [(terms[i], round(float(scores[i]), 4)) for i in order]


def split_unsorted(session: ReviewSession, image_ids, arrays: Optional[RunArrays] = None) -> Edit:
    """Make a new cluster of images that all sit in one cluster (typically the unsorted bucket), named after
    the best of their own anchors that names no other cluster, with those anchors; one ``split`` event."""
    ids = np.unique(np.asarray(image_ids, np.int64).reshape(-1))
    state = session.state
    known = ids[np.isin(ids, state.image_ids)]
    if known.size == 0:
        raise InvalidInputError("no images of this review were chosen; select the unsorted images to group.")
    clusters = np.unique(state.labels[state.positions(known)])
    if len(clusters) != 1:
        raise InvalidInputError(f"the chosen images sit in {len(clusters)} clusters; choose images of one cluster "
                                "(e.g. only unsorted ones).")
    counterparts = (arrays or session_arrays(session))("counterparts")
    anchors, name = [], None
    terms = text_terms(session)
    if counterparts is not None and len(counterparts) == len(state.labels) and terms is not None:
        text_space, _ = run_text_space(session.workspace, session.run_id)
        anchors = selection_anchors(counterparts[state.positions(known)], text_space, terms)
        taken = {n.casefold() for n in state.names.values()}
        name = next((term for term, _ in anchors if term.casefold() not in taken), None)
    return session.split(int(clusters[0]), known, name, anchors)
