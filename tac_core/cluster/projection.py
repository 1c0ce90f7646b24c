"""A 2-D map of the images for the Review page: PCA, then UMAP, kept so new images can be placed on it.

Why PCA first: UMAP's neighbour search and layout are much faster on 50 dimensions than on 512–1024, and
the leading components hold the cluster structure. PCA also centres the data, so the cosine metric then
measures angles around the collection's mean instead of around the origin, where CLIP's common offset (the
modality gap) squeezes every cosine into a narrow band.

The fitted :class:`Projection` keeps its PCA and UMAP models: ``transform`` places new images into the
existing map (UMAP's out-of-sample transform) instead of recomputing it, so the map the reviewer has learnt
does not move. Seeding UMAP (``random_state``) makes it deterministic and single-threaded.

Timings are in :func:`fit_projection`'s docstring. While UMAP runs, the app can show :func:`quick_layout`
(PCA to 2-D: 0.2–1.6 s for 50,000 images).

Persistence: ``save(folder)`` writes ``coordinates.npy`` (atomically, no pickle) and ``projection.joblib``
(the fitted models, a pickle; the linear layout is stored as plain arrays so that no class of this package is
pickled and the file does not depend on where this module lives). Maps saved by TAC Studio 0.1 pickled
``tac_core.projection.LinearLayout``; :meth:`Projection.load` reads them through a module alias. :meth:`Projection.load` unpickles that file, which can run arbitrary code,
so it must only ever be given a folder of the user's own workspace, never a file from elsewhere. A run's job
saves its map in the run's folder; :func:`tac_core.run.run_map.place_new` puts images added to the workspace later
onto that map without recomputing it.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..atomic import atomic_path, write_npy
from ..errors import InvalidInputError
from ..progress import ProgressFn, report

STAGE = "projecting"
STEPS = 100  # progress of a fit counts to this: PCA done at 5, UMAP's layout epochs from 10 to 100
METRICS = ("cosine", "euclidean", "correlation")
MIN_POINTS_FOR_UMAP = 4
COORDINATES_FILE = "coordinates.npy"
MODELS_FILE = "projection.joblib"
LEGACY_MODULE = "tac_core.projection"  # where 0.1 kept this module: its saved maps pickle that path


@dataclass
class LinearLayout:
    """The first two principal axes, as a plain linear map; the layout for tiny collections and the quick map.

    Axes are the top eigenvectors of the covariance (cheap for any N), each signed so its largest loading is
    positive, so the same data always gives the same picture. Missing axes (rank < 2) are zero.
    """
    mean: np.ndarray  # (d,)
    axes: np.ndarray  # (2, d)

    @classmethod
    def fit(cls, features: np.ndarray) -> "LinearLayout":
        mean = features.mean(axis=0, dtype=np.float64)
        centred = features - mean.astype(features.dtype)
        # the product in the features' own precision (float32): 0.2 s for 50,000 × 512
        eigenvalues, eigenvectors = np.linalg.eigh((centred.T @ centred).astype(np.float64))
        axes = eigenvectors[:, ::-1][:, :2].T.copy()
        axes[eigenvalues[::-1][:2] <= 1e-12 * max(1.0, float(eigenvalues.max(initial=0.0)))] = 0.0
        if axes.shape[0] < 2:  # one-dimensional features
            axes = np.vstack([axes, np.zeros((2 - axes.shape[0], axes.shape[1]))])
        signs = np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])
        return cls(mean, axes * np.where(signs == 0, 1.0, signs)[:, None])

    def transform(self, features: np.ndarray) -> np.ndarray:
        centred = features - self.mean.astype(features.dtype)
        return (centred @ self.axes.T.astype(features.dtype)).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": np.asarray(self.mean), "axes": np.asarray(self.axes)}

    @classmethod
    def from_saved(cls, saved) -> Optional["LinearLayout"]:
        """A layout from what :meth:`Projection.save` stored: arrays, or (0.1) the pickled object itself."""
        if saved is None or isinstance(saved, cls):
            return saved
        return cls(np.asarray(saved["mean"]), np.asarray(saved["axes"]))


@dataclass
class Projection:
    """A fitted 2-D map: ``coordinates`` (N × 2 float32) and the models that place new points on it.

    ``pca_`` is the PCA step (``None`` when the features were already small enough), ``umap_`` the fitted
    UMAP (``None`` for fewer than 4 images, where ``linear_`` is the layout instead); ``params`` records the
    settings actually used (``n_neighbors`` may have been lowered for small collections).
    """
    coordinates: np.ndarray
    n_features: int
    params: dict[str, Any]
    pca_: Any = None
    umap_: Any = None
    linear_: Optional[LinearLayout] = None

    def transform(self, features) -> np.ndarray:
        """Place new images (M × d, same model as the fit) into this map without moving the existing points."""
        x = _check_features(features, "new features")
        if x.shape[1] != self.n_features:
            raise InvalidInputError(f"the new features have {x.shape[1]} dimensions but the map was fitted on "
                                    f"{self.n_features}; embed the new images with the same model.")
        if self.umap_ is None:
            return self.linear_.transform(x)
        reduced = self.pca_.transform(x) if self.pca_ is not None else x
        return np.array(self.umap_.transform(reduced), dtype=np.float32)  # a copy: UMAP may hand back its own

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``coordinates.npy`` and ``projection.joblib`` into ``folder`` (created if missing), atomically.

        The models carry a checksum of the coordinates, so a save interrupted between the two files is
        detected on load instead of pairing a new map with old models.
        """
        import joblib

        folder = Path(folder)
        linear = None if self.linear_ is None else self.linear_.to_arrays()
        state = {"n_features": self.n_features, "params": self.params, "pca_": self.pca_, "umap_": self.umap_,
                 "linear_": linear, "coordinates_sha256": _checksum(self.coordinates)}
        with atomic_path(folder / MODELS_FILE) as tmp:
            joblib.dump(state, tmp)
        write_npy(folder / COORDINATES_FILE, self.coordinates)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Projection":
        """Read a map written by :meth:`save`. Unpickles: only for folders of the user's own workspace."""
        import joblib

        folder = Path(folder)
        coordinates_path, models_path = folder / COORDINATES_FILE, folder / MODELS_FILE
        missing = [p.name for p in (coordinates_path, models_path) if not p.is_file()]
        if missing:
            raise InvalidInputError(f"no saved map in {folder}: {', '.join(missing)} missing; compute the map again.")
        try:
            coordinates = np.load(coordinates_path, allow_pickle=False)
            with _legacy_module_alias():
                state = joblib.load(models_path)
            projection = cls(coordinates, state["n_features"], state["params"], state["pca_"], state["umap_"],
                             LinearLayout.from_saved(state["linear_"]))
            checksum = state["coordinates_sha256"]
        except Exception as exc:  # a damaged file can fail in many ways; all mean "recompute"
            raise InvalidInputError(f"the saved map in {folder} cannot be read ({type(exc).__name__}); "
                                    "compute the map again.") from exc
        if _checksum(coordinates) != checksum:
            raise InvalidInputError(f"{coordinates_path} does not match the models saved beside it (an interrupted "
                                    "save?); compute the map again.")
        return projection


def quick_layout(features) -> np.ndarray:
    """A 2-D PCA picture (N × 2 float32) to show at once while the UMAP map is computed."""
    x = _check_features(features, "features")
    return LinearLayout.fit(x).transform(x)


def linear_projection(features) -> Projection:
    """The PCA picture of :func:`quick_layout` as a :class:`Projection`, so it can be saved and extended too."""
    x = _check_features(features, "features")
    linear = LinearLayout.fit(x)
    return Projection(linear.transform(x), x.shape[1], {"method": "pca"}, linear_=linear)


def fit_projection(features, random_state: int = 0, pca_dims: int = 50, n_neighbors: int = 15,
                   min_dist: float = 0.1, metric: str = "cosine",
                   progress: Optional[ProgressFn] = None) -> Projection:
    """Fit the 2-D map of ``features`` (N × d): PCA to ``pca_dims`` when d and N both exceed it, then UMAP.

    Fewer than 4 points get the linear layout of :func:`quick_layout` instead of failing; fewer points than
    ``n_neighbors`` + 1 lower ``n_neighbors`` to N − 1.

    Timings (2-core machine shared with other work, load ≈ 3; synthetic 512-d features; defaults): fit
    10,000 points 24 s, 50,000 points 60 s; ``transform`` of 1,000 new points 1–1.5 s. numba compiles once
    per process on first use: ~20–35 s for small maps, another ~60 s the first time a map has ≥ 4,096 points
    (UMAP then switches to approximate neighbours), and on a machine whose numba disk cache is still empty
    the first ``transform`` of such a map took two minutes. So maps of large collections belong in a
    background job, with :func:`quick_layout` shown meanwhile.
    """
    x = _check_features(features, "features")
    _check_settings(pca_dims, n_neighbors, min_dist, metric)
    n, d = x.shape
    params = {"random_state": random_state, "pca_dims": pca_dims, "n_neighbors": min(n_neighbors, n - 1),
              "min_dist": min_dist, "metric": metric}
    report(progress, STAGE, 0, STEPS)
    if n < MIN_POINTS_FOR_UMAP:
        linear = LinearLayout.fit(x)
        report(progress, STAGE, STEPS, STEPS)
        return Projection(linear.transform(x), d, params, linear_=linear)

    from sklearn.decomposition import PCA

    pca = None
    if d > pca_dims and n > pca_dims:
        pca = PCA(n_components=pca_dims, random_state=random_state).fit(x)
        x = pca.transform(x).astype(np.float32)
    report(progress, STAGE, 5, STEPS)

    import umap  # imported here: numba makes the import slow, and the quick layout does not need it

    model = umap.UMAP(n_neighbors=params["n_neighbors"], n_components=2, min_dist=min_dist, metric=metric,
                      random_state=random_state, transform_seed=random_state, n_jobs=1,
                      tqdm_kwds=None if progress is None else _EpochProgress(progress).tqdm_kwds())
    coordinates = np.asarray(model.fit_transform(x), dtype=np.float32)
    model.tqdm_kwds = {"disable": True}  # the fitted model is saved: it must not hold the progress callback
    report(progress, STAGE, STEPS, STEPS)
    return Projection(coordinates, d, params, pca_=pca, umap_=model)


class _EpochProgress:
    """A file for UMAP's epoch bar (tqdm, written as "<epoch>/<epochs>"): each line becomes a progress report
    from 10 to :data:`STEPS`, so the app can tell the time left from the layout's own pace."""

    def __init__(self, progress: ProgressFn) -> None:
        self.progress = progress

    def tqdm_kwds(self) -> dict:
        return {"disable": False, "file": self, "bar_format": "{n}/{total}\n", "mininterval": 0.5}

    def write(self, text: str) -> None:
        for part in text.split():
            done, _, total = part.partition("/")
            if done.isdigit() and total.isdigit() and int(total) > 0:
                report(self.progress, STAGE, 10 + (STEPS - 10) * int(done) // int(total), STEPS)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def _legacy_module_alias():
    """Let a map pickled by 0.1 find ``tac_core.projection.LinearLayout`` here, while it is read."""
    added = LEGACY_MODULE not in sys.modules
    if added:
        sys.modules[LEGACY_MODULE] = sys.modules[__name__]
    try:
        yield
    finally:
        if added:
            del sys.modules[LEGACY_MODULE]


def _checksum(coordinates: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(coordinates, dtype=np.float32).tobytes()).hexdigest()


def _check_features(features, name: str) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidInputError(f"{name} must be a non-empty 2-D array (images × dimensions); got shape {x.shape}.")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise InvalidInputError(f"{name} have NaN or infinite values in {int(bad.sum())} row(s), first at row "
                                f"{int(np.argmax(bad))}; re-create these embeddings.")
    return x


def _check_settings(pca_dims, n_neighbors, min_dist, metric) -> None:
    def is_int(value) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if not is_int(pca_dims) or pca_dims < 2:
        raise InvalidInputError(f"pca_dims must be an integer of at least 2; got {pca_dims!r}.")
    if not is_int(n_neighbors) or n_neighbors < 2:
        raise InvalidInputError(f"n_neighbors must be an integer of at least 2; got {n_neighbors!r}.")
    if not 0.0 <= min_dist <= 1.0:
        raise InvalidInputError(f"min_dist must lie between 0 and 1; got {min_dist!r}.")
    if metric not in METRICS:
        raise InvalidInputError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}.")
