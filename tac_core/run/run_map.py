"""A finished run's map and text space, extended: images added to the workspace later are embedded with the
run's model, given counterparts from its text space and placed on its map without moving it.

The run's job saves its fitted map (:class:`~tac_core.cluster.projection.Projection`) in ``runs/<id>/map/`` and the
text rows its counterparts mix (run array ``text_space``) with τ in its summary. :func:`embed_for_run` and
:func:`place_on_map` are the steps; :func:`place_new` does both for the Review page's map, and
:mod:`tac_core.run.intake` uses them to sort new images into a reviewed run.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..cluster.projection import Projection
from ..cluster.tac import text_counterparts
from ..devices import resolve_device
from ..embedding.embed import embed_images
from ..errors import InvalidInputError
from ..progress import ProgressFn
from ..workspace.intake import run_text_space
from ..workspace.run_layout import MAP_FOLDER
from .params import model_from_dict


def new_image_ids(workspace, run_id: int, image_ids=None, held=None) -> np.ndarray:
    """``image_ids`` checked to be usable images of the workspace, or by default every usable image not in
    ``held`` (default: the run's own images), i.e. those added after the run."""
    usable = workspace.images("ok")["id"].to_numpy()
    if image_ids is None:
        return np.setdiff1d(usable, workspace.run_image_ids(run_id) if held is None else held)
    ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
    unknown = np.setdiff1d(ids, usable)
    if len(unknown):
        raise InvalidInputError(f"image id(s) {unknown[:5].tolist()} are not usable images of this workspace.")
    return ids


def embed_for_run(workspace, run_id: int, image_ids: np.ndarray, *, device: str = "auto",
                  progress: Optional[ProgressFn] = None, cancel=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids embedded, their embeddings, their counterparts) of workspace images, with finished run ``run_id``'s
    model through the workspace's cache (embedded ones cost nothing) and its text space and τ. Images that
    cannot be embedded are left out."""
    run = finished_run(workspace, run_id)
    text_space, tau = run_text_space(workspace, run_id)
    ids = np.asarray(image_ids, np.int64)
    if len(ids) == 0:
        return ids, np.empty((0, text_space.shape[1]), np.float32), np.empty((0, text_space.shape[1]), np.float32)
    spec = model_from_dict(run["params"].get("model") or {})
    device = str(resolve_device(device))
    images = workspace.images("ok").set_index("id").loc[ids]
    embedded = embed_images(spec, images["path"].tolist(), images["sha256"].tolist(), workspace.cache_dir,
                            device=device, thumbnails_dir=workspace.thumbs_dir, progress=progress, cancel=cancel)
    x = embedded.embeddings[embedded.ok]
    return ids[embedded.ok], x, text_counterparts(x, text_space, tau, device)


def finished_run(workspace, run_id: int) -> dict:
    """The run's row, or :class:`InvalidInputError` unless it is done (only a finished run takes new images)."""
    run = workspace.run(run_id)
    if run["status"] != "done":
        raise InvalidInputError(f"run {run_id} is {run['status']}; only a finished run can take new images.")
    return run


def saved_map(workspace, run_id: int) -> Optional[Projection]:
    """The run's fitted map, or None for a run saved without one (``projection`` none, or an old run)."""
    folder = workspace.run_dir(run_id) / MAP_FOLDER
    return Projection.load(folder) if folder.is_dir() else None


def place_on_map(projection: Projection, image_embeddings: np.ndarray, counterparts: np.ndarray) -> np.ndarray:
    """Places (M × 2) of images on a fitted map (UMAP's out-of-sample transform, or the same linear map)."""
    if len(image_embeddings) == 0:
        return np.empty((0, 2), np.float32)
    return projection.transform(np.concatenate([image_embeddings, counterparts], axis=1))


def place_new(workspace, run_id: int, image_ids=None, *, device: str = "auto", progress: Optional[ProgressFn] = None,
              cancel=None) -> tuple[np.ndarray, np.ndarray]:
    """Place images of ``workspace`` on finished run ``run_id``'s map without moving it: (image ids, N × 2).

    ``image_ids`` default to the workspace's usable images the run does not hold (those added after it).
    Images that cannot be embedded are left out of the result.
    """
    finished_run(workspace, run_id)
    projection = Projection.load(workspace.run_dir(run_id) / MAP_FOLDER)
    ids, x, counterparts = embed_for_run(workspace, run_id, new_image_ids(workspace, run_id, image_ids),
                                         device=device, progress=progress, cancel=cancel)
    return ids, place_on_map(projection, x, counterparts)
