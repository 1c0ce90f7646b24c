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

from .. import atomic
from ..errors import RunStatusError, TacError
from ..progress import CancelToken, Cancelled
from ..workspace.runs import SUMMARY_FILE
from ..workspace.workspace import Workspace, open_workspace
from ..workspace.run_layout import MAP_FOLDER
from .params import RunParams

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
        except RunStatusError as exc:  # cancelled before it started
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
    except RunStatusError:
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


def _compute(workspace: Workspace, run_id: int, stored: dict, progress: _Reporter, cancel: CancelToken) -> None:
    """:func:`~tac_core.run.pipeline.compute_run` on the run's images, then its result into the workspace."""
    from ..embedding.ray_cluster import ray_options  # the workspace embeds on a Ray cluster when it names one
    from .pipeline import ImageFiles, compute_run

    params = RunParams.from_dict(stored)
    vocab = params.vocabulary()
    image_ids = workspace.run_image_ids(run_id)
    images = workspace.images().set_index("id").loc[image_ids]
    run = compute_run(params, ImageFiles(images["path"].tolist(), images["sha256"].tolist()), vocab,
                      cache_root=workspace.cache_dir, thumbnails_dir=workspace.thumbs_dir, progress=progress,
                      cancel=cancel, ray=ray_options(workspace.setting("ray_address")))
    run_dir = workspace.run_dir(run_id)
    if run.projection is not None:
        run.projection.save(run_dir / MAP_FOLDER)  # place_new puts later images on this map
    failed = [{"image_id": int(image_ids[i]), "rel_path": images["rel_path"].iloc[i], "reason": reason}
              for i, reason in run.failed.items()]
    atomic.write_json(run_dir / SUMMARY_FILE, {
        "n_images": len(run.labels), "failed_images": failed, **run.facts, "selected_terms": run.selected_terms,
        "text_space_terms": run.text_terms,
        "seconds": run.seconds()})
    progress.flush()
    workspace.save_run_result(run_id, image_ids[run.kept], run.labels, run.confidence, run.anchors, run.arrays())


def main(workspace: str, run_id: int) -> int:
    """The ``run-job`` command: exit 0 done, 2 failed, 130 cancelled."""
    status = run_job(workspace, run_id)
    return {"done": 0, "cancelled": 130}.get(status, 2)
