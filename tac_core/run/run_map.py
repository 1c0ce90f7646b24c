"""A finished run's map, extended: images added to the workspace later are placed on it without moving it.

The run's job saves its fitted map (:class:`~tac_core.cluster.projection.Projection`) in ``runs/<id>/map/`` and the
text rows its counterparts mix (run array ``text_space``) with τ in its summary; :func:`place_new` embeds the
new images with the run's model, gives them counterparts the same way and transforms them onto the map.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..embedding.embed import embed_images
from ..errors import InvalidInputError
from .jobs import read_summary
from .params import MAP_FOLDER, TEXT_SPACE_ARRAY, model_from_dict
from ..devices import resolve_device
from ..progress import ProgressFn
from ..cluster.projection import Projection
from ..cluster.tac import text_counterparts


def place_new(workspace, run_id: int, image_ids=None, *, device: str = "auto", progress: Optional[ProgressFn] = None,
              cancel=None) -> tuple[np.ndarray, np.ndarray]:
    """Place images of ``workspace`` on finished run ``run_id``'s map without moving it: (image ids, N × 2).

    ``image_ids`` default to the workspace's usable images the run does not hold (those added after it). They
    are embedded with the run's model through the workspace's cache (already embedded ones cost nothing),
    given text counterparts from the run's text space with the run's τ, and placed by the run's saved map
    (:meth:`Projection.transform`: UMAP's out-of-sample transform, or the same linear map for a PCA picture).
    Images that cannot be embedded are left out of the result.
    """
    run = workspace.run(run_id)
    if run["status"] != "done":
        raise InvalidInputError(f"run {run_id} is {run['status']}; only a finished run has a map to place images on.")
    projection = Projection.load(workspace.run_dir(run_id) / MAP_FOLDER)
    text_space = workspace.load_run_array(run_id, TEXT_SPACE_ARRAY)
    if text_space is None:
        raise InvalidInputError(f"run {run_id} was computed before maps could take new images; run it again.")
    usable = workspace.images("ok").set_index("id")
    if image_ids is None:
        ids = np.setdiff1d(usable.index.to_numpy(), workspace.run_image_ids(run_id))
    else:
        ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        unknown = np.setdiff1d(ids, usable.index.to_numpy())
        if len(unknown):
            raise InvalidInputError(f"image id(s) {unknown[:5].tolist()} are not usable images of this workspace.")
    if len(ids) == 0:
        return ids.astype(np.int64), np.empty((0, 2), np.float32)
    spec = model_from_dict(run["params"].get("model") or {})
    device = str(resolve_device(device))
    images = usable.loc[ids]
    embedded = embed_images(spec, images["path"].tolist(), images["sha256"].tolist(), workspace.cache_dir,
                            device=device, thumbnails_dir=workspace.thumbs_dir, progress=progress, cancel=cancel)
    ok = embedded.ok
    x = embedded.embeddings[ok]
    if len(x) == 0:
        return ids[ok], np.empty((0, 2), np.float32)
    tau = float(read_summary(workspace, run_id).get("tau", 0.005))
    counterparts = text_counterparts(x, text_space, tau, device)
    return ids[ok], projection.transform(np.concatenate([x, counterparts], axis=1))
