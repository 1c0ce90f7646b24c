"""Clustering runs of a workspace, each in its own process: the app stays responsive and a crash of the job
never takes the server down.

Protocol (``python -m tac_core run-job --workspace PATH --run RUN_ID``):

- The app describes the run (:class:`tac_core.run.params.RunParams`, checked when made), creates a "pending"
  run over the workspace's usable images with ``RunParams.to_dict()`` as its parameters, and starts the job
  (:func:`launch`); the job's pid is stored at once, so a job that dies at any moment reads as "interrupted"
  (``tac_core.workspace.runs.effective_status``).
- The job marks the run "running" (with its pid), reads its parameters back (``RunParams.from_dict``), computes
  it with :func:`tac_core.run.pipeline.compute_run` (the CLI's computation too), and reports every stage with counts through
  ``update_run_progress`` and ``runs/<id>/stages.json`` (all stages seen, with seconds; at most every
  :data:`PROGRESS_INTERVAL_S` per stage): embedding images, embedding vocabulary, selecting nouns,
  clustering (free) or finding neighbours + training (trained), projection, suggesting K.
- It ends "done" (``save_run_result`` with anchors and arrays: ``image_embeddings``, ``counterparts``,
  ``cluster_centers``, ``confidence``, ``projection``, ``text_space`` (the rows counterparts mix); free mode
  ``margin``; trained mode ``probabilities``, ``text_probabilities`` and the heads' weights
  ``heads.<image|text>.<parameter>``, see :func:`load_heads`), with the fitted map in ``runs/<id>/map/`` (so
  :func:`tac_core.run.run_map.place_new` can put later images on it) and ``runs/<id>/summary.json`` (selected
  terms, τ, images that failed to embed, timings, K suggestion, and the facts the CLI's run.json records:
  device, model identity, vocabulary fingerprint, package versions);
  or "failed" with a plain message saying what to do; or "cancelled".
- Cancel (:func:`cancel_run`): SIGTERM → the job sets a :class:`CancelToken`, stops at the next batch and
  marks the run "cancelled"; embedding caches keep every completed batch. Force (SIGKILL) leaves it
  "interrupted" (then marked cancelled). A re-run (:func:`rerun`) sets the run back to "pending" and starts a
  job again; the caches make it skip finished embeddings.
- Output of the job goes to ``runs/<id>/job.log`` (tracebacks of unexpected failures too).

The job process itself is :mod:`tac_core.run.job`. Tests and debugging can run jobs inside the calling
process: set ``TAC_STUDIO_JOBS_INLINE=1``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import EmptyInputError, InvalidInputError, RunStatusError
from ..workspace.workspace import Workspace
from .job import finish_run, run_job
from .params import RunParams

INLINE_ENV = "TAC_STUDIO_JOBS_INLINE"
_ROOT = Path(__file__).resolve().parents[2]


# -- starting, cancelling, reading --------------------------------------------------------------------
def start_run(workspace: Workspace, params: RunParams, image_ids=None) -> int:
    """Create a pending run (:func:`prepare_run`) and launch its job; returns the run id."""
    run_id = prepare_run(workspace, params, image_ids)
    launch_or_fail(workspace, run_id)
    return run_id


def prepare_run(workspace: Workspace, params: RunParams, image_ids=None) -> int:
    """Create a pending run (default: every usable image) for :func:`launch_or_fail`; returns the run id.

    Refused before any run exists: no model, no usable images, K above their number, a vocabulary set with no
    term left (everything switched off or filtered out).
    """
    params.require_model()
    params.vocabulary()  # EmptyInputError naming the problem; the job would fail on it later
    if image_ids is None:
        image_ids = workspace.images("ok")["id"].to_numpy()
    if len(image_ids) == 0:
        raise EmptyInputError("this workspace has no usable images yet; add images on the Images page first.")
    if params.n_clusters > len(image_ids):
        raise InvalidInputError(f"K = {params.n_clusters} is more than the {len(image_ids)} usable images; choose "
                                f"K of at most {len(image_ids)}.")
    return workspace.create_run(params.to_dict(), image_ids)


def launch_or_fail(workspace: Workspace, run_id: int, inline: Optional[bool] = None) -> None:
    """:func:`launch`; a job that cannot even be started leaves a failed run saying why, never a pending one
    forever."""
    try:
        launch(workspace, run_id, inline)
    except Exception as exc:
        finish_run(workspace, run_id, "failed", f"the job could not be started ({type(exc).__name__}: {exc}).")
        raise


def launch(workspace: Workspace, run_id: int, inline: Optional[bool] = None) -> Optional[int]:
    """Start the job of a pending run in a new process (its pid is stored at once); returns the pid.

    With ``inline`` (None: when ``TAC_STUDIO_JOBS_INLINE=1``) the job runs here and now instead, and None is
    returned (the command line runs its jobs so).
    """
    if inline if inline is not None else os.environ.get(INLINE_ENV, "").strip() in ("1", "true", "yes"):
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
    except RunStatusError:
        pass  # the job already finished or failed by itself
    return child.pid


def rerun(workspace: Workspace, run_id: int) -> None:
    """Run an interrupted, failed or cancelled run again (same parameters, same images); reviewers and up."""
    workspace.require("run")
    workspace.set_run_status(run_id, "pending")
    workspace.record("run restarted", run_id=run_id)
    launch_or_fail(workspace, run_id)


def cancel_run(workspace: Workspace, run_id: int, force: bool = False) -> str:
    """Ask the run's job to stop (SIGTERM; ``force``: SIGKILL, then mark cancelled); reviewers and up. Returns
    what was done."""
    workspace.require("run")
    run = workspace.run(run_id)
    if run["status"] not in ("pending", "interrupted", "running"):
        return f"run {run_id} is {run['status']}; nothing to cancel"
    workspace.record("run cancelled", {"force": bool(force)}, run_id=run_id)
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
            except RunStatusError:
                pass  # it ended by itself meanwhile
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
    return workspace.run_summary(run_id)


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
