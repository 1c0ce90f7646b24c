"""New batches into a reviewed run: embed the images added after it, place them on its map, and sort them into
its reviewed clusters as one undoable edit (:mod:`tac_core.workspace.intake`); and classify images or
embeddings by a workspace run's reviewed state without recording anything (the CLI's ``classify``).

Sorting a batch costs its embedding (nothing for images already in the cache), a matrix product against the
clusters' prototypes and the map's out-of-sample transform: a small fraction of clustering everything again
(``python -m bench.intake``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..cluster.prototypes import Assignment
from ..errors import EmptyInputError
from ..progress import ProgressFn
from ..workspace.intake import IntakeResult, record_intake, run_text_space, session_arrays, state_prototypes
from ..workspace.review import ReviewSession
from .run_map import embed_for_run, new_image_ids, place_on_map, saved_map


def pending_images(session: ReviewSession) -> np.ndarray:
    """Ids of the workspace's usable images the review does not hold yet (added after the run and its intakes)."""
    session.refresh()
    return new_image_ids(session.workspace, session.run_id, held=session.state.image_ids)


def intake_new_images(session: ReviewSession, image_ids=None, *, device: str = "auto",
                      progress: Optional[ProgressFn] = None, cancel=None) -> IntakeResult:
    """Sort images added after the run (default: all of :func:`pending_images`) into the session's reviewed
    clusters, on its map, as one ``intake`` event. Images that cannot be embedded are left out."""
    session.workspace.require("edit", session.user)  # before minutes of embedding
    ids = pending_images(session) if image_ids is None else new_image_ids(session.workspace, session.run_id,
                                                                            image_ids)
    if len(ids) == 0:
        raise EmptyInputError(f"there are no images to add to run {session.run_id}: every usable image of the "
                              "workspace is in its review already. Add a new batch on the Images page first.")
    ids, x, counterparts = embed_for_run(session.workspace, session.run_id, ids, device=device, progress=progress,
                                         cancel=cancel)
    if len(ids) == 0:
        raise EmptyInputError("none of the new images could be embedded; check that their files still exist and open.")
    projection = saved_map(session.workspace, session.run_id)
    coordinates = None if projection is None else place_on_map(projection, x, counterparts)
    return record_intake(session, ids, x, counterparts, coordinates)


def classify_embeddings(session: ReviewSession, image_embeddings: np.ndarray, device: str = "cpu") -> Assignment:
    """Sort image embeddings (the run's model) into the session's reviewed clusters; records nothing."""
    session.refresh()
    text_space, tau = run_text_space(session.workspace, session.run_id)
    prototypes = state_prototypes(session.state, session_arrays(session), text_space, tau, device)
    return prototypes.assign(image_embeddings, device)
