"""Clustering runs of a workspace, each in its own process: the app stays responsive and a crash of the job
never takes the server down.

Protocol (``python -m tac_core run-job --workspace PATH --run RUN_ID``):

- The app validates the parameters (:func:`make_params`), creates a "pending" run over the workspace's usable
  images with them, and starts the job (:func:`launch`); the job's pid is stored at once, so a job that
  dies at any moment reads as "interrupted" (``tac_core.workspace_runs.effective_status``).
- The job marks the run "running" (with its pid), then reports every stage with counts through
  ``update_run_progress`` and ``runs/<id>/stages.json`` (all stages seen, with seconds; at most every
  :data:`PROGRESS_INTERVAL_S` per stage): embedding images, embedding vocabulary, selecting nouns,
  clustering (free) or finding neighbours + training (trained), projection, suggesting K.
- It ends "done" (``save_run_result`` with anchors and arrays: ``image_embeddings``, ``counterparts``,
  ``cluster_centers``, ``confidence``, ``projection``, ``text_space`` (the rows counterparts mix); free mode
  ``margin``; trained mode ``probabilities``, ``text_probabilities`` and the heads' weights
  ``heads.<image|text>.<parameter>``, see :func:`load_heads`), with the fitted map in ``runs/<id>/map/`` (so
  :func:`tac_core.run_map.place_new` can put later images on it) and ``runs/<id>/summary.json`` (selected
  terms, τ, images that failed to embed, timings, K suggestion);
  or "failed" with a plain message saying what to do; or "cancelled".
- Cancel (:func:`cancel_run`): SIGTERM → the job sets a :class:`CancelToken`, stops at the next batch and
  marks the run "cancelled"; embedding caches keep every completed batch. Force (SIGKILL) leaves it
  "interrupted" (then marked cancelled). A re-run (:func:`rerun`) sets the run back to "pending" and starts a
  job again; the caches make it skip finished embeddings.
- Output of the job goes to ``runs/<id>/job.log`` (tracebacks of unexpected failures too).

Tests and debugging can run jobs inside the calling process: set ``TAC_STUDIO_JOBS_INLINE=1``.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Optional

import numpy as np

from . import atomic
from .errors import EmptyInputError, InvalidInputError, TacError
from .progress import CancelToken, Cancelled
from .workspace import Workspace, open_workspace

MODES = ("free", "trained")
DEVICES = ("auto", "cuda", "mps", "cpu")
PROJECTIONS = ("umap", "pca")
INLINE_ENV = "TAC_STUDIO_JOBS_INLINE"
PROGRESS_INTERVAL_S = 0.5
STAGES = {"free": ("embedding images", "embedding vocabulary", "selecting nouns", "clustering", "projection",
                   "suggesting K"),
          "trained": ("embedding images", "embedding vocabulary", "selecting nouns", "finding neighbours", "training",
                      "projection", "suggesting K")}
OOM_ADVICE = "try device cpu or a smaller image batch size"
MAP_FOLDER = "map"  # inside a run's folder: its fitted map (tac_core.run_map places later images on it)
TEXT_SPACE_ARRAY = "text_space"  # the run array holding the text rows counterparts are mixed from
_ROOT = Path(__file__).resolve().parent.parent


# -- parameters ---------------------------------------------------------------------------------------
def make_params(*, model: dict, vocab_set: str, vocab_spec: dict, n_clusters: int, mode: str = "free",
                seed: int = 0, device: str = "auto", epochs: int = 20, batch_size: int = 64,
                projection: str = "umap", suggest_k: bool = True) -> dict:
    """Every parameter of a run as stored in its row (the vocabulary spec is copied, so later edits of the set
    never change what a run used)."""
    return validate_params({"model": model, "vocab_set": vocab_set, "vocab_spec": vocab_spec,
                            "n_clusters": n_clusters, "mode": mode, "seed": seed, "device": device,
                            "epochs": epochs, "batch_size": batch_size, "projection": projection,
                            "suggest_k": suggest_k})


def run_model_spec(params: dict):
    """The :class:`~tac_core.models.ModelSpec` of a run's ``params["model"]`` (default weights: openai)."""
    from .models import ModelSpec

    model = params.get("model") or {}
    return ModelSpec(model.get("name", ""), model.get("pretrained") or "openai", model.get("checkpoint") or None)


def validate_params(params: dict) -> dict:
    from .vocab_spec import validate_spec

    out = dict(params)
    spec = run_model_spec(out)
    out["model"] = {"name": spec.name, "pretrained": spec.pretrained, "checkpoint": spec.checkpoint}
    out["vocab_spec"] = validate_spec(out.get("vocab_spec"))
    for key, low in (("n_clusters", 2), ("seed", 0), ("epochs", 1), ("batch_size", 1)):
        value = out.get(key)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise InvalidInputError(f"{key} must be a whole number of at least {low}; got {value!r}.")
        out[key] = int(value)
    for key, allowed in (("mode", MODES), ("device", DEVICES), ("projection", PROJECTIONS)):
        if out.get(key) not in allowed:
            raise InvalidInputError(f"{key} must be one of {', '.join(allowed)}; got {out.get(key)!r}.")
    out["suggest_k"] = bool(out.get("suggest_k", True))
    out["vocab_set"] = str(out.get("vocab_set") or "")
    return out


# -- starting, cancelling, reading --------------------------------------------------------------------
def start_run(workspace: Workspace, params: dict, image_ids=None) -> int:
    """Create a pending run (default: every usable image) and launch its job; returns the run id.

    Refused before any run exists: no usable images, K above their number, a vocabulary set with no term left
    (everything switched off or filtered out).
    """
    from .vocab_spec import build_vocabulary

    params = validate_params(params)
    build_vocabulary(params["vocab_spec"])  # EmptyInputError naming the problem; the job would fail on it later
    if image_ids is None:
        image_ids = workspace.images("ok")["id"].to_numpy()
    if len(image_ids) == 0:
        raise EmptyInputError("this workspace has no usable images yet; add images on the Images page first.")
    if params["n_clusters"] > len(image_ids):
        raise InvalidInputError(f"K = {params['n_clusters']} is more than the {len(image_ids)} usable images; choose "
                                f"K of at most {len(image_ids)}.")
    run_id = workspace.create_run(params, image_ids)
    _launch_or_fail(workspace, run_id)
    return run_id


def _launch_or_fail(workspace: Workspace, run_id: int) -> None:
    """Launch; a job that cannot even be started leaves a failed run saying why, never a pending one forever."""
    try:
        launch(workspace, run_id)
    except Exception as exc:
        _finish(workspace, run_id, "failed", f"the job could not be started ({type(exc).__name__}: {exc}).")
        raise


def launch(workspace: Workspace, run_id: int) -> Optional[int]:
    """Start the job of a pending run in a new process (its pid is stored at once); returns the pid.

    With ``TAC_STUDIO_JOBS_INLINE=1`` the job runs here and now instead, and None is returned.
    """
    if os.environ.get(INLINE_ENV, "").strip() in ("1", "true", "yes"):
        run_job(workspace.path, run_id)
        return None
    run_dir = workspace.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])))
    options = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if sys.platform == "win32"
               else {"start_new_session": True})  # a Ctrl-C of the server does not kill running jobs
    with open(run_dir / "job.log", "ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "tac_core", "run-job", "--workspace", str(workspace.path),
                                  "--run", str(run_id)], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, cwd=_ROOT, env=env, **options)
    threading.Thread(target=child.wait, daemon=True).start()  # reap it when it ends (no zombie)
    try:
        workspace.set_run_status(run_id, "running", pid=child.pid)
    except InvalidInputError:
        pass  # the job already finished or failed by itself
    return child.pid


def rerun(workspace: Workspace, run_id: int) -> None:
    """Run an interrupted, failed or cancelled run again (same parameters, same images)."""
    workspace.set_run_status(run_id, "pending")
    _launch_or_fail(workspace, run_id)


def cancel_run(workspace: Workspace, run_id: int, force: bool = False) -> str:
    """Ask the run's job to stop (SIGTERM; ``force``: SIGKILL, then mark cancelled). Returns what was done."""
    run = workspace.run(run_id)
    if run["status"] not in ("pending", "interrupted", "running"):
        return f"run {run_id} is {run['status']}; nothing to cancel"
    pid = int(run["pid"] or 0)
    if run["status"] != "running" or not _is_our_job(pid, workspace, run_id):
        workspace.set_run_status(run_id, "cancelled", error="cancelled by the user")
        return "cancelled"
    try:
        os.kill(pid, signal.SIGKILL if force and hasattr(signal, "SIGKILL") else signal.SIGTERM)
    except ProcessLookupError:
        pass
    if force:
        for _ in range(50):
            if workspace.run(run_id)["status"] != "running":
                break
            time.sleep(0.1)
        if workspace.run(run_id)["status"] in ("interrupted", "running"):
            try:
                workspace.set_run_status(run_id, "cancelled", error="stopped by the user (forced)")
            except InvalidInputError:
                pass
        return "stopped"
    return "stopping"


def _is_our_job(pid: int, workspace: Workspace, run_id: int) -> bool:
    """Whether ``pid`` is this run's job (a recycled pid must never be signalled); True where unknowable."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return sys.platform != "linux"
    return b"run-job" in args and str(run_id).encode() in args and os.fsencode(str(workspace.path)) in args


def read_stages(workspace: Workspace, run_id: int) -> list[dict]:
    """The stages the job has reported so far, in order: stage, done, total, seconds, first_done."""
    try:
        return json.loads((workspace.run_dir(run_id) / "stages.json").read_text(encoding="utf-8"))["stages"]
    except (OSError, ValueError, KeyError):
        return []


def read_summary(workspace: Workspace, run_id: int) -> dict:
    """What a finished run's job wrote beside its result (summary.json), or {}."""
    try:
        return json.loads((workspace.run_dir(run_id) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def log_tail(workspace: Workspace, run_id: int, lines: int = 20) -> str:
    try:
        text = (workspace.run_dir(run_id) / "job.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def load_heads(workspace: Workspace, run_id: int) -> Optional[dict]:
    """A trained run's heads as ``{"image": state_dict, "text": state_dict}`` (``TAC.heads_``), else None."""
    import torch

    state: dict = {"image": {}, "text": {}}
    for path in sorted(workspace.run_dir(run_id).glob("heads.*.npy")):
        _, which, name = path.stem.split(".", 2)
        state[which][name] = torch.from_numpy(np.load(path, allow_pickle=False))
    return state if state["image"] and state["text"] else None


# -- the job itself -----------------------------------------------------------------------------------
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
            _finish(workspace, run_id, "cancelled", "cancelled by the user; run it again to continue (finished "
                                                    "embeddings are kept)")
            return "cancelled"
        except BaseException as exc:  # noqa: BLE001 - every failure must end as a status with a message
            message = explain_failure(exc, workspace.run_dir(run_id) / "job.log")
            if not isinstance(exc, TacError):
                traceback.print_exc()
            print(f"run {run_id} failed: {message}", flush=True)
            _finish(workspace, run_id, "failed", message)
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


def _finish(workspace: Workspace, run_id: int, status: str, message: str) -> None:
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
    from .embed import embed_images, embed_vocabulary
    from .models import describe_devices, resolve_device
    from .pipeline import ClusterConfig
    from .progress import check_cancel
    from .results import package_versions
    from .vocab_spec import build_vocabulary

    timings: dict[str, float] = {}
    params = validate_params(params)
    spec = run_model_spec(params)
    vocab = build_vocabulary(params["vocab_spec"])
    device = str(resolve_device(params["device"]))
    image_ids = workspace.run_image_ids(run_id)
    images = workspace.images().set_index("id").loc[image_ids]
    start = time.perf_counter()
    embedded = embed_images(spec, images["path"].tolist(), images["sha256"].tolist(), workspace.cache_dir,
                            device=device, batch_size=params["batch_size"], thumbnails_dir=workspace.thumbs_dir,
                            progress=progress, cancel=cancel)
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
    v = embed_vocabulary(spec, vocab.names, params["vocab_spec"]["templates"], workspace.cache_dir, device=device,
                         progress=progress, cancel=cancel)
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
        from .suggest_k import suggest_k

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
        "device": device, "image_precision": embedded.precision,
        "devices_detected": describe_devices(), "k_suggestion": suggestion,
        "seconds": {k: round(s, 3) for k, s in timings.items()}, "versions": package_versions()})
    progress.flush()
    anchors = [[(names[i], float(score)) for i, score in cluster] for cluster in model.anchors_]
    workspace.save_run_result(run_id, image_ids[ok], model.labels_, model.confidence_, anchors, arrays)


def compute_layout(features: np.ndarray, method: str = "umap", seed: int = 0, progress=None) -> np.ndarray:
    """2-D coordinates of the rows (the Review page's map): :func:`compute_projection`'s coordinates."""
    return np.asarray(compute_projection(features, method, seed, progress).coordinates, np.float32)


def compute_projection(features: np.ndarray, method: str = "umap", seed: int = 0, progress=None):
    """The fitted 2-D map of the rows (a :class:`~tac_core.projection.Projection`), computed once per run.

    ``"umap"`` (the app's default) is :func:`tac_core.projection.fit_projection` (PCA to 50, then cosine UMAP);
    ``"pca"`` is its instant linear picture (:func:`~tac_core.projection.linear_projection`), for tests and
    previews. Either can place new images later (:func:`tac_core.run_map.place_new`).
    """
    from .projection import fit_projection, linear_projection

    if method == "pca":
        return linear_projection(features)
    relabelled = None if progress is None else (lambda _stage, done, total: progress("projection", done, total))
    return fit_projection(features, random_state=seed, progress=relabelled)


def main(workspace: str, run_id: int) -> int:
    """The ``run-job`` command: exit 0 done, 2 failed, 130 cancelled."""
    status = run_job(workspace, run_id)
    return {"done": 0, "cancelled": 130}.get(status, 2)
