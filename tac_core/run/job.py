"""The job process of a run (``python -m tac_core run-job``): compute a pending run and store its result.

See :mod:`tac_core.run.jobs` for the protocol between the app and this process.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Optional

import numpy as np

from .. import atomic
from ..errors import EmptyInputError, InvalidInputError, TacError
from ..progress import CancelToken, Cancelled
from ..workspace.workspace import Workspace, open_workspace
from .params import MAP_FOLDER, TEXT_SPACE_ARRAY, run_model_spec, validate_params

PROGRESS_INTERVAL_S = 0.5
OOM_ADVICE = "try device cpu or a smaller image batch size"


class _Reporter:
    """Progress into the run row and stages.json, throttled (a stage change or its end is always written)."""

    def __init__(self, workspace: Workspace, run_id: int) -> None:
        self.workspace, self.run_id = workspace, run_id
        self.path = workspace.run_dir(run_id) / "stages.json"
        self.stages: list[dict] = []
        self.last_write = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.time()
        current = self.stages[-1] if self.stages else None
        changed = current is None or current["stage"] != stage
        if changed:
            if current is not None:
                current["seconds"] = round(now - current["started"], 3)
            current = {"stage": stage, "done": done, "total": total, "first_done": done, "started": now, "seconds": 0.0}
            self.stages.append(current)
        current.update(done=int(done), total=int(total), seconds=round(now - current["started"], 3))
        if changed or done >= total or now - self.last_write >= PROGRESS_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        self.last_write = time.time()
        last = self.stages[-1] if self.stages else {"stage": "", "done": 0, "total": 0}
        self.workspace.update_run_progress(self.run_id, last["stage"], last["done"], last["total"])
        atomic.write_json(self.path, {"stages": self.stages})


def run_job(workspace_path: str | os.PathLike, run_id: int, cancel: Optional[CancelToken] = None) -> str:
    """Compute a pending (or interrupted) run and store its result; returns the final status."""
    workspace = open_workspace(workspace_path)
    try:
        run = workspace.run(run_id)
        if run["status"] not in ("pending", "interrupted", "running"):
            print(f"run {run_id} is {run['status']}; nothing to do", flush=True)
            return run["status"]
        if run["status"] == "running" and run["pid"] != os.getpid():
            print(f"run {run_id} is already being computed by process {run['pid']}", flush=True)
            return "running"
        try:
            workspace.set_run_status(run_id, "running", pid=os.getpid())
        except InvalidInputError as exc:  # cancelled before it started
            print(f"not started: {exc}", flush=True)
            return workspace.run(run_id)["status"]
        workspace.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        cancel = cancel or CancelToken()
        reporter = _Reporter(workspace, run_id)
        atomic.write_json(reporter.path, {"stages": []})
        previous = _install_signal_handlers(cancel)
        try:
            _compute(workspace, run_id, run["params"], reporter, cancel)
            print(f"run {run_id} done", flush=True)
            return "done"
        except Cancelled:
            with contextlib.suppress(Exception):  # the stages as far as they got (the throttle may hold the last)
                reporter.flush()
            finish_run(workspace, run_id, "cancelled", "cancelled by the user; run it again to continue (finished "
                                                    "embeddings are kept)")
            return "cancelled"
        except BaseException as exc:  # noqa: BLE001 - every failure must end as a status with a message
            message = explain_failure(exc, workspace.run_dir(run_id) / "job.log")
            if not isinstance(exc, TacError):
                traceback.print_exc()
            print(f"run {run_id} failed: {message}", flush=True)
            finish_run(workspace, run_id, "failed", message)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return "failed"
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        workspace.close()


def explain_failure(exc: BaseException, log_path: Path) -> str:
    """A failure in plain words, with what to do."""
    text = str(exc)
    if isinstance(exc, TacError):
        return text
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        return f"the GPU ran out of memory ({text.splitlines()[0][:160] if text else 'CUDA'}); {OOM_ADVICE}."
    if isinstance(exc, MemoryError):
        return ("this computer ran out of memory; close other programs, use fewer images, a smaller image batch "
                "size or fewer vocabulary terms.")
    first = text.splitlines()[0][:200] if text else ""
    return f"unexpected failure ({type(exc).__name__}: {first}); the details are in {log_path}."


def finish_run(workspace: Workspace, run_id: int, status: str, message: str) -> None:
    """End a run with a status and message; nothing when it has already ended."""
    try:
        workspace.set_run_status(run_id, status, error=message)
    except InvalidInputError:
        pass  # already ended (e.g. cancelled from the app while failing)


def _install_signal_handlers(cancel: CancelToken) -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}  # inline jobs in a server thread: cancel through the token only
    previous = {}
    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            sig = getattr(signal, name)
            previous[sig] = signal.signal(sig, lambda *_: cancel.cancel())
    return previous


def _compute(workspace: Workspace, run_id: int, params: dict, progress: _Reporter, cancel: CancelToken) -> None:
    from ..embedding.ray_cluster import ray_options
    from ..embedding.embed import embed_images, embed_vocabulary
    from ..devices import describe_devices, resolve_device
    from .pipeline import ClusterConfig
    from ..progress import check_cancel
    from .results import package_versions
    from ..inputs.vocab_spec import build_vocabulary

    timings: dict[str, float] = {}
    params = validate_params(params)
    spec = run_model_spec(params)
    vocab = build_vocabulary(params["vocab_spec"])
    device = str(resolve_device(params["device"]))
    ray = ray_options(workspace.setting("ray_address"))  # the workspace embeds on a Ray cluster when it names one
    embed_device = params["device"] if ray else device  # on Ray: what each worker finds on its machine
    image_ids = workspace.run_image_ids(run_id)
    images = workspace.images().set_index("id").loc[image_ids]
    start = time.perf_counter()
    embedded = embed_images(spec, images["path"].tolist(), images["sha256"].tolist(), workspace.cache_dir,
                            device=embed_device, batch_size=params["batch_size"], thumbnails_dir=workspace.thumbs_dir,
                            progress=progress, cancel=cancel, ray=ray)
    timings["embed_images"] = time.perf_counter() - start
    ok = embedded.ok
    failed = [{"image_id": int(image_ids[i]), "rel_path": images["rel_path"].iloc[i], "reason": reason}
              for i, reason in embedded.failed.items()]
    if ok.sum() < 2:
        raise EmptyInputError(f"only {int(ok.sum())} of {len(ok)} images could be embedded; clustering needs at least "
                              "2. See the images page for unreadable files.")
    if params["n_clusters"] > ok.sum():
        raise InvalidInputError(f"K = {params['n_clusters']} is more than the {int(ok.sum())} images that could be "
                                "embedded; choose a smaller K.")
    x = embedded.embeddings[ok]
    start = time.perf_counter()
    v = embed_vocabulary(spec, vocab.names, params["vocab_spec"]["templates"], workspace.cache_dir,
                         device=embed_device, progress=progress, cancel=cancel, ray=ray)
    timings["embed_vocabulary"] = time.perf_counter() - start
    config = ClusterConfig(n_clusters=params["n_clusters"], mode=params["mode"], seed=params["seed"],
                           epochs=params["epochs"], device=device, templates=params["vocab_spec"]["templates"],
                           model=spec, cache_root=workspace.cache_dir)
    model = config.estimator(progress, cancel).fit(x, v, domain_mask=vocab.is_domain)
    timings.update({f"tac_{stage}": seconds for stage, seconds in model.timings_.items()})
    check_cancel(cancel)
    features = np.concatenate([x, model.counterparts_], axis=1)
    start = time.perf_counter()
    progress("projection", 0, 2)
    projection = compute_projection(features, params["projection"], params["seed"], progress)
    projection.save(workspace.run_dir(run_id) / MAP_FOLDER)  # place_new puts later images on this map
    coords = projection.coordinates
    progress("projection", 2, 2)
    timings["projection"] = time.perf_counter() - start
    suggestion = None
    if params["suggest_k"] and len(x) >= 6:
        from ..cluster.suggest_k import suggest_k

        start = time.perf_counter()
        result = suggest_k(x, v, vocab.is_domain, random_state=params["seed"], device=device, progress=progress,
                           cancel=cancel)
        suggestion = {"best_k": result.best_k, "explanation": result.explanation, "rows": result.rows(),
                      "stability_threshold": result.stability_threshold, "n_points_used": result.n_points_used}
        timings["suggest_k"] = time.perf_counter() - start
    check_cancel(cancel)
    arrays = {"image_embeddings": x.astype(np.float32), "counterparts": model.counterparts_.astype(np.float32),
              "cluster_centers": model.cluster_centers_.astype(np.float32),
              "confidence": model.confidence_.astype(np.float32), "projection": coords.astype(np.float32),
              TEXT_SPACE_ARRAY: v[model.text_indices_].astype(np.float32)}
    if params["mode"] == "free":
        arrays["margin"] = model.margin_.astype(np.float32)
    else:
        arrays["probabilities"] = model.probabilities_.astype(np.float32)
        arrays["text_probabilities"] = model.text_probabilities_.astype(np.float32)
        for which, state in model.heads_.items():
            for name, tensor in state.items():
                arrays[f"heads.{which}.{name}"] = tensor.detach().cpu().numpy()
    names = vocab.names
    atomic.write_json(workspace.run_dir(run_id) / "summary.json", {
        "n_images": int(ok.sum()), "failed_images": failed, "n_vocabulary": len(vocab),
        "n_domain_terms": int(vocab.is_domain.sum()), "vocabulary_fingerprint": vocab.fingerprint(),
        "selected_terms": [names[i] for i in model.selected_indices_], "n_text_terms": int(len(model.text_indices_)),
        "n_semantic_centers": int(model.n_centers_), "tau": float(model.tau), "model_identity": spec.identity(),
        "device": device, "image_precision": embedded.precision, "ray_address": ray.address if ray else None,
        "devices_detected": describe_devices(), "k_suggestion": suggestion,
        "seconds": {k: round(s, 3) for k, s in timings.items()}, "versions": package_versions()})
    progress.flush()
    anchors = [[(names[i], float(score)) for i, score in cluster] for cluster in model.anchors_]
    workspace.save_run_result(run_id, image_ids[ok], model.labels_, model.confidence_, anchors, arrays)


def compute_layout(features: np.ndarray, method: str = "umap", seed: int = 0, progress=None) -> np.ndarray:
    """2-D coordinates of the rows (the Review page's map): :func:`compute_projection`'s coordinates."""
    return np.asarray(compute_projection(features, method, seed, progress).coordinates, np.float32)


def compute_projection(features: np.ndarray, method: str = "umap", seed: int = 0, progress=None):
    """The fitted 2-D map of the rows (a :class:`~tac_core.cluster.projection.Projection`), computed once per run.

    ``"umap"`` (the app's default) is :func:`tac_core.cluster.projection.fit_projection` (PCA to 50, then cosine UMAP);
    ``"pca"`` is its instant linear picture (:func:`~tac_core.cluster.projection.linear_projection`), for tests and
    previews. Either can place new images later (:func:`tac_core.run.run_map.place_new`).
    """
    from ..cluster.projection import fit_projection, linear_projection

    if method == "pca":
        return linear_projection(features)
    relabelled = None if progress is None else (lambda _stage, done, total: progress("projection", done, total))
    return fit_projection(features, random_state=seed, progress=relabelled)


def main(workspace: str, run_id: int) -> int:
    """The ``run-job`` command: exit 0 done, 2 failed, 130 cancelled."""
    status = run_job(workspace, run_id)
    return {"done": 0, "cancelled": 130}.get(status, 2)
