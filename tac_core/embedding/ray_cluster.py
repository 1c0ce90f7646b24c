"""Joining a Ray cluster, and the encoder actors a run asks of it: what :mod:`tac_core.embedding.distributed`
runs on, kept free of torch so the app's settings and the CLI's checks load it at no cost.

Ray is imported only when a Ray path is used (:func:`import_ray`): without it nothing changes for a single machine.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from ..errors import InvalidInputError

INSTALL_HINT = "install it with: pip install -r requirements-ray.txt"
LOCAL = "local"


@dataclass(frozen=True)
class RayOptions:
    """Where and how to embed on Ray.

    ``address``: ``"local"`` (start Ray on this machine with its cores and GPUs, or ``local_cpus`` cores),
    ``"auto"`` (the cluster this machine joined with ``ray start``), or a cluster's address (``HOST:6379``,
    ``ray://HOST:10001``). ``workers``: encoder actors (default: one per ``gpus_per_worker`` of the cluster's GPUs,
    else one). ``cpus_per_worker`` and ``gpus_per_worker``: what each actor reserves (GPUs only where the cluster
    has them); ``decode_cpus``: what each decoding task reserves. A Ray already connected in this process is used
    as it is.
    """

    address: str = LOCAL
    workers: Optional[int] = None
    gpus_per_worker: float = 1.0
    cpus_per_worker: float = 1.0
    decode_cpus: float = 1.0
    local_cpus: Optional[int] = None
    object_store_mb: Optional[int] = None

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address.strip() or any(c.isspace() for c in self.address):
            raise InvalidInputError(f"Ray address {self.address!r} must be 'local', 'auto' or HOST:PORT.")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise InvalidInputError(f"Ray workers must be a whole number of at least 1; got {self.workers!r}.")
        for name in ("gpus_per_worker", "cpus_per_worker", "decode_cpus"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value <= 64:
                raise InvalidInputError(f"{name.replace('_', ' ')} must be a number above 0; got {value!r}.")
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise InvalidInputError(f"gpus per worker above 1 must be whole; got {self.gpus_per_worker!r}.")


def import_ray():
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the part used here
    except ImportError as exc:
        raise InvalidInputError(f"Embedding on a Ray cluster needs Ray, which is not installed; {INSTALL_HINT}, "
                                "or embed on this machine (no Ray address).") from exc
    return ray


_deferred = 0  # open ``ray_session(lazy=True)`` blocks: a Ray joined inside them stays until the last one ends


@contextlib.contextmanager
def ray_session(options: Optional[RayOptions], lazy: bool = False) -> Iterator[None]:
    """Connected to the Ray of ``options`` for the block (nothing when None). A Ray already connected in this
    process is used and left connected; one started or joined here is disconnected at the end. ``lazy``: do not
    connect now, but keep a Ray that steps inside the block connect to until the block ends (a command whose
    steps all find their vectors cached never starts Ray; one whose steps do starts it once)."""
    global _deferred
    if options is None:
        yield
        return
    ray = import_ray()
    connected_before = ray.is_initialized()
    if lazy:
        _deferred += 1
    elif not connected_before:
        connect(options)
    try:
        yield
    finally:
        _deferred -= lazy
        if not connected_before and not _deferred and ray.is_initialized():
            ray.shutdown()


def ray_options(address: Optional[str]) -> Optional[RayOptions]:
    """The options of a workspace's Ray address setting: None (embed on this machine) when it is empty."""
    return RayOptions(address.strip()) if address and address.strip() else None


def connect(options: RayOptions) -> None:
    """Start (``local``) or join the Ray of ``options``, shipping ``tac_core`` to its workers."""
    ray = import_ray()
    if ray.is_initialized():
        return
    package = str(Path(__file__).resolve().parent.parent)
    settings = {"log_to_driver": False, "logging_level": logging.ERROR,
                "runtime_env": {"py_modules": [package], "excludes": ["__pycache__"]}}
    if options.address == LOCAL:
        settings.update(address=LOCAL, num_cpus=options.local_cpus, include_dashboard=False,
                        object_store_memory=None if options.object_store_mb is None else options.object_store_mb << 20)
    else:
        settings["address"] = options.address
    try:
        ray.init(**settings)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError... for a bad address
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InvalidInputError(f"Could not start or join Ray at {options.address!r} ({first}). Start a cluster "
                                "with `ray start --head`, check the address, or use 'local'.") from exc
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # progress goes through the caller's progress function
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # not "progress bars disabled" on every run


@dataclass(frozen=True)
class EncoderPool:
    """The encoder actors a run gets on the connected cluster (see :func:`encoder_pool`)."""

    workers: int
    gpus_per_worker: float  # 0 on a cluster without GPUs, or for device "cpu"
    cpus_per_worker: float
    decode_cpus: float
    cluster_cpus: float
    cluster_gpus: float

    def describe(self) -> dict:
        return {"workers": self.workers, "gpus_per_worker": self.gpus_per_worker,
                "cpus_per_worker": self.cpus_per_worker, "decode_cpus": self.decode_cpus,
                "cluster_cpus": self.cluster_cpus, "cluster_gpus": self.cluster_gpus}

    def map_args(self, actor: type, constructor: dict, batch_size: int) -> dict:
        ray = import_ray()
        return {"fn": actor, "fn_constructor_kwargs": constructor, "batch_size": batch_size, "batch_format": "numpy",
                "compute": ray.data.ActorPoolStrategy(size=self.workers), "num_cpus": self.cpus_per_worker,
                "num_gpus": self.gpus_per_worker or None}


def encoder_pool(options: RayOptions, device: str = "auto") -> EncoderPool:
    """The pool for ``options`` on the connected cluster; refuses one whose actors would leave no CPU for decoding
    (the run would wait for ever) or ask for more GPUs than there are."""
    resources = import_ray().cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if device == "cuda" and not gpus:
        raise InvalidInputError("device cuda was asked for, but the Ray cluster has no GPU; use device auto or cpu.")
    gpu_share = options.gpus_per_worker if gpus and device in ("auto", "cuda") else 0.0
    workers = options.workers or (max(1, int(gpus // gpu_share)) if gpu_share else 1)
    if gpu_share and workers * gpu_share > gpus + 1e-9:
        raise InvalidInputError(f"{workers} Ray workers × {gpu_share:g} GPU need {workers * gpu_share:g} GPUs; the "
                                f"cluster has {gpus:g}. Use fewer workers or a smaller GPU fraction.")
    if workers * options.cpus_per_worker + options.decode_cpus > cpus:
        raise InvalidInputError(
            f"{workers} Ray workers × {options.cpus_per_worker:g} CPU leave less than the {options.decode_cpus:g} "
            f"CPU a decoding task needs on a cluster of {cpus:g} CPUs; use fewer workers or a smaller CPU share.")
    return EncoderPool(workers, gpu_share, options.cpus_per_worker, options.decode_cpus, cpus, gpus)
