"""Runs of a workspace: parameters, progress, status and results, stored so no reader sees half a result.

A run is created "pending" with its parameters and input image ids (by a reviewer or higher; the activity
log records who), becomes "running" in the process that computes it (whose pid is stored), and ends "done"
(:meth:`RunsMixin.save_run_result`), "failed" or "cancelled". The job's own bookkeeping (status, progress,
result, arrays) is not a user's decision and is not checked: only a run a reviewer created gets a job. A run
left "running" by a process that no longer exists (killed, crashed, machine restarted) reads as
"interrupted"; setting it back to "pending" runs it again. Results: assignments, anchors and
cluster names in SQLite in one transaction; arrays under ``runs/<id>/<name>.npy``, each written atomically
*before* the commit that marks the run done, so a done run always has its arrays.
Rows of a run's arrays follow ``position``, the order of the ``image_ids`` given to ``save_run_result``.
"""
from __future__ import annotations

import json
import operator
import os
import re
import sqlite3
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from .. import atomic
from ..errors import EmptyInputError, InvalidInputError, RunStatusError
from .store import WorkspaceUnreadableError, process_alive, to_json, utc_now, validate_name

RUN_STATUSES = ("pending", "running", "done", "failed", "cancelled")
_NEXT_STATUSES = {  # effective status -> what set_run_status may make of it; "done" only via save_run_result
    "pending": {"running", "failed", "cancelled"},
    "running": {"running", "failed", "cancelled"},
    "interrupted": {"pending", "running", "failed", "cancelled"},
    "failed": {"pending"},
    "cancelled": {"pending"},
    "done": set(),
}
MAX_CLUSTER_NAME_LENGTH = 200
SUMMARY_FILE = "summary.json"  # in a run's folder: what its job found out (tac_core.run.job writes it)
ARRAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_RUN_COLUMNS = ("id, parent_run_id, status, stage, done, total, n_images, n_clusters, created, started, finished, "
                "error, pid, params")

Anchors = Sequence[Sequence[tuple[str, float]]]


def automatic_name(cluster: int) -> str:
    """The name a cluster gets until the user names it: ``"cluster <id>"``. Such a name follows the cluster's id
    (re-clustering renumbers it with the id); a name the user gave follows the cluster."""
    return f"cluster {int(cluster)}"


def is_automatic_name(name: str, cluster: int) -> bool:
    return name == automatic_name(cluster)


def id_array(values, what: str = "image ids") -> np.ndarray:
    """Ids as a flat, duplicate-free int64 array, or :class:`InvalidInputError` saying what is wrong."""
    array = np.asarray(values)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise InvalidInputError(f"{what} must be a flat list of integer ids, not an array of shape {array.shape} "
                                f"and type {array.dtype}.")
    array = array.astype(np.int64)
    unique, counts = np.unique(array, return_counts=True)
    if len(unique) != len(array):
        raise InvalidInputError(f"id {int(unique[counts > 1][0])} appears more than once in the {what}; give "
                                "each id once.")
    return array


def require_known_ids(ids: np.ndarray, known: np.ndarray, where: str) -> None:
    """Raise :class:`InvalidInputError` naming the first few ``ids`` missing from ``known``."""
    missing = ids[~np.isin(ids, known)]
    if missing.size:
        shown = ", ".join(str(int(i)) for i in missing[:5]) + (", ..." if missing.size > 5 else "")
        raise InvalidInputError(f"{missing.size} image id(s) are not {where}: {shown}.")


def effective_status(status: str, pid: Optional[float]) -> str:
    """The stored status, except that "running" without a live process is "interrupted". ``pid`` may come as a
    float (a column of runs where some have none: NaN)."""
    if status == "running" and not (pid and pid == pid and process_alive(int(pid))):
        return "interrupted"
    return status


class RunsMixin:
    """The run methods of :class:`tac_core.workspace.workspace.Workspace` (kept apart to keep modules small)."""

    path: Path

    def run_dir(self, run_id: int) -> Path:
        return self.path / "runs" / str(operator.index(run_id))

    def create_run(self, params: dict, image_ids, parent_run_id: Optional[int] = None) -> int:
        """A new "pending" run over usable images of this workspace (reviewers and up); returns its id."""
        if not isinstance(params, dict):
            raise InvalidInputError(f"run parameters must be a dict, not {type(params).__name__}.")
        params_text = to_json(params, "run parameters")
        ids = id_array(image_ids)
        if ids.size == 0:
            raise EmptyInputError("a run needs at least one image; add images to the workspace first.")
        with self.transaction() as conn:
            self.require("run", conn=conn)
            if parent_run_id is not None:
                self._run_row(parent_run_id, conn)
            usable = np.fromiter((row[0] for row in conn.execute("SELECT id FROM images WHERE status = 'ok'")),
                                 dtype=np.int64)
            require_known_ids(ids, usable, "usable images of this workspace")
            run_id = conn.execute("INSERT INTO runs (parent_run_id, params, status, n_images, created) "
                                  "VALUES (?, ?, 'pending', ?, ?)",
                                  (parent_run_id, params_text, len(ids), utc_now())).lastrowid
            conn.executemany("INSERT INTO run_images (run_id, position, image_id) VALUES (?, ?, ?)",
                             ((run_id, position, image_id) for position, image_id in enumerate(ids.tolist())))
            self.record("run started", {"images": len(ids), "parent_run_id": parent_run_id}, run_id=run_id,
                        conn=conn)
        return run_id

    def run_image_ids(self, run_id: int) -> np.ndarray:
        """The run's input image ids in the order they were given."""
        self._run_row(run_id)
        rows = self.connection().execute("SELECT image_id FROM run_images WHERE run_id = ? ORDER BY position",
                                         (run_id,))
        return np.fromiter((row[0] for row in rows), dtype=np.int64)

    def update_run_progress(self, run_id: int, stage: str, done: int, total: int) -> bool:
        """Record progress of a pending or running run; returns False (and stores nothing) for any other."""
        with self.transaction() as conn:
            self._run_row(run_id, conn)
            cur = conn.execute("UPDATE runs SET stage = ?, done = ?, total = ? WHERE id = ? AND status IN "
                               "('pending', 'running')", (str(stage), int(done), int(total), run_id))
        return cur.rowcount == 1

    def set_run_status(self, run_id: int, status: str, error: Optional[str] = None,
                       pid: Optional[int] = None) -> None:
        """Move a run to ``status``; "running" stores ``pid`` (default: this process) to detect interruption.

        Allowed: pending → running/failed/cancelled; running → running/failed/cancelled; interrupted →
        pending/running/failed/cancelled; failed or cancelled → pending (run again). "done" is set by
        :meth:`save_run_result` only (setting it again on a done run does nothing). Any other change raises
        :class:`~tac_core.errors.RunStatusError`; a status that does not exist, :class:`InvalidInputError`.
        """
        if status not in RUN_STATUSES:
            raise InvalidInputError(f"run status {status!r} is not one of {', '.join(RUN_STATUSES)}.")
        now = utc_now()
        with self.transaction() as conn:
            row = self._run_row(run_id, conn)
            current = effective_status(row["status"], row["pid"])
            if status == "done" and current == "done":
                return
            if status == "done":
                raise RunStatusError(f"run {run_id} has no result yet; save_run_result stores it and marks the "
                                        "run done.")
            if status not in _NEXT_STATUSES[current]:
                raise RunStatusError(f"run {run_id} is {current}; it cannot become {status}.")
            if status == "running":
                started = row["started"] if current == "running" else now
                conn.execute("UPDATE runs SET status = 'running', pid = ?, started = ?, error = NULL WHERE id = ?",
                             (pid or os.getpid(), started, run_id))
            elif status == "pending":
                conn.execute("UPDATE runs SET status = 'pending', pid = NULL, stage = '', done = 0, total = 0, "
                             "error = NULL, started = NULL, finished = NULL WHERE id = ?", (run_id,))
            else:
                conn.execute("UPDATE runs SET status = ?, error = ?, finished = ? WHERE id = ?",
                             (status, None if error is None else str(error), now, run_id))

    def runs(self) -> pd.DataFrame:
        """Every run, newest first, with its effective status and ``params`` as a dict; ``n_clusters`` (the clusters
        of its result) and ``parent_run_id`` are whole numbers or empty."""
        frame = self._frame(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id DESC")
        frame["status"] = [effective_status(s, p) for s, p in zip(frame["status"], frame["pid"])]
        frame["params"] = [json.loads(text) for text in frame["params"]]
        frame["parent_run_id"] = frame["parent_run_id"].astype("Int64")
        frame["n_clusters"] = frame["n_clusters"].astype("Int64")  # empty (not NaN, which makes a float) until done
        return frame

    def run(self, run_id: int) -> dict:
        """One run as a dict (columns of :meth:`runs`)."""
        row = self._run_row(run_id)
        record = dict(row)
        record["status"] = effective_status(row["status"], row["pid"])
        record["params"] = json.loads(row["params"])
        return record

    def save_run_result(self, run_id: int, image_ids, labels, confidence, anchors: Anchors,
                        arrays: Optional[dict[str, np.ndarray]] = None,
                        cluster_names: Optional[Sequence[str]] = None) -> None:
        """Store a finished clustering and mark the run done.

        ``anchors[c]`` lists cluster c's (term, score) pairs best first, so ``len(anchors)`` is the number of
        clusters (trailing empty clusters included). ``cluster_names`` default to "cluster 0", "cluster 1", ...
        A run that is not pending, running or interrupted takes no result (:class:`~tac_core.errors.RunStatusError`).
        """
        ids = id_array(image_ids)
        labels = _label_array(labels, len(ids), len(anchors))
        confidence = np.asarray(confidence, dtype=np.float64)
        if confidence.shape != ids.shape or not np.isfinite(confidence).all():
            raise InvalidInputError(f"confidence must hold one finite number per image ({len(ids)}), got shape "
                                    f"{confidence.shape}.")
        anchor_rows = _anchor_rows(run_id, anchors)
        names = ([automatic_name(c) for c in range(len(anchors))] if cluster_names is None
                 else [validate_name(n, "cluster name", MAX_CLUSTER_NAME_LENGTH) for n in cluster_names])
        if len(names) != len(anchors):
            raise InvalidInputError(f"{len(names)} cluster names were given for {len(anchors)} clusters.")
        arrays = dict(arrays or {})
        self._check_result_allowed(run_id, ids)
        for name, array in arrays.items():
            self.save_run_array(run_id, name, array)
        with self.transaction() as conn:
            self._check_result_allowed(run_id, ids, conn)
            conn.executemany("INSERT INTO assignments (run_id, position, image_id, cluster, confidence) "
                             "VALUES (?, ?, ?, ?, ?)",
                             zip([run_id] * len(ids), range(len(ids)), ids.tolist(), labels.tolist(),
                                 confidence.tolist()))
            conn.executemany("INSERT INTO anchors (run_id, cluster, rank, term, score) VALUES (?, ?, ?, ?, ?)",
                             anchor_rows)
            conn.executemany("INSERT INTO clusters (run_id, cluster, name) VALUES (?, ?, ?)",
                             [(run_id, c, name) for c, name in enumerate(names)])
            conn.execute("UPDATE runs SET status = 'done', n_clusters = ?, finished = ?, error = NULL WHERE id = ?",
                         (len(anchors), utc_now(), run_id))

    def run_assignments(self, run_id: int) -> pd.DataFrame:
        """position, image_id, cluster, confidence and the image's path, rel_path and sha256, by position."""
        self._run_row(run_id)
        return self._frame("SELECT a.position, a.image_id, a.cluster, a.confidence, i.path, i.rel_path, i.sha256 "
                           "FROM assignments a JOIN images i ON i.id = a.image_id WHERE a.run_id = ? "
                           "ORDER BY a.position", (run_id,))

    def run_anchors(self, run_id: int) -> list[list[tuple[str, float]]]:
        """Per cluster, the (term, score) anchors saved with the result, best first."""
        n_clusters = self._run_row(run_id)["n_clusters"] or 0
        anchors: list[list[tuple[str, float]]] = [[] for _ in range(n_clusters)]
        for cluster, term, score in self.connection().execute(
                "SELECT cluster, term, score FROM anchors WHERE run_id = ? ORDER BY cluster, rank", (run_id,)):
            anchors[cluster].append((term, score))
        return anchors

    def run_cluster_names(self, run_id: int) -> dict[int, str]:
        """The names saved with the result (the review log renames on top of these)."""
        self._run_row(run_id)
        return dict(self.connection().execute("SELECT cluster, name FROM clusters WHERE run_id = ? ORDER BY cluster",
                                              (run_id,)).fetchall())

    def run_summary(self, run_id: int) -> dict:
        """What a finished run's job wrote beside its result (:data:`SUMMARY_FILE`: model identity, vocabulary
        fingerprint, τ, timings, ...), or {} when there is none or it cannot be read."""
        try:
            return json.loads((self.run_dir(run_id) / SUMMARY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def save_run_array(self, run_id: int, name: str, array: np.ndarray) -> Path:
        """Write ``runs/<id>/<name>.npy`` atomically (e.g. a layout computed after the run)."""
        self._run_row(run_id)
        array = np.asarray(array)
        if array.dtype == object:
            raise InvalidInputError(f"run array {name!r} holds Python objects; give a numeric array.")
        path = self._array_path(run_id, name)
        atomic.write_npy(path, array)
        return path

    def load_run_array(self, run_id: int, name: str) -> Optional[np.ndarray]:
        """The array saved under ``name``, or None when the run has none by that name."""
        self._run_row(run_id)
        path = self._array_path(run_id, name)
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise WorkspaceUnreadableError(f"the run array {path} is damaged ({exc}); run the clustering again "
                                           "to rebuild it.") from exc

    def _array_path(self, run_id: int, name: str) -> Path:
        if not isinstance(name, str) or not ARRAY_NAME.fullmatch(name):
            raise InvalidInputError(f"run array name {name!r} must be 1-100 letters, digits, '_', '-' or '.', "
                                    "starting with a letter or digit.")
        return self.run_dir(run_id) / f"{name}.npy"

    def _check_result_allowed(self, run_id: int, ids: np.ndarray, conn: Optional[sqlite3.Connection] = None) -> None:
        row = self._run_row(run_id, conn)
        current = effective_status(row["status"], row["pid"])
        if current not in ("pending", "running", "interrupted"):
            raise RunStatusError(f"run {run_id} is {current}; only a pending or running run takes a result.")
        require_known_ids(ids, self.run_image_ids(run_id), f"in run {run_id}")

    def _run_row(self, run_id: int, conn: Optional[sqlite3.Connection] = None) -> dict:
        try:
            run_id = operator.index(run_id)
        except TypeError:
            raise InvalidInputError(f"a run id is an integer, not {run_id!r}.") from None
        cur = (conn or self.connection()).execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        row = cur.fetchone()
        if row is None:
            raise InvalidInputError(f"there is no run {run_id} in this workspace; choose one from the runs list.")
        return dict(zip([d[0] for d in cur.description], row))


def _label_array(labels, n_images: int, n_clusters: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != (n_images,) or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise InvalidInputError(f"labels must hold one integer per image ({n_images}), got shape {array.shape} "
                                f"of {array.dtype}.")
    if array.size and (array.min() < 0 or array.max() >= n_clusters):
        raise InvalidInputError(f"labels must lie in 0..{n_clusters - 1} (one anchor list per cluster), got "
                                f"{int(array.min())}..{int(array.max())}.")
    return array.astype(np.int64)


def _anchor_rows(run_id: int, anchors: Anchors) -> list[tuple]:
    rows = []
    for cluster, pairs in enumerate(anchors):
        for rank, pair in enumerate(pairs):
            try:
                term, score = pair
                score = float(score)
            except (TypeError, ValueError):
                raise InvalidInputError(f"anchor {rank} of cluster {cluster} must be a (term, score) pair, "
                                        f"got {pair!r}.") from None
            if not isinstance(term, str) or not term or not np.isfinite(score):
                raise InvalidInputError(f"anchor {rank} of cluster {cluster} must have a term and a finite "
                                        f"score, got {pair!r}.")
            rows.append((run_id, cluster, rank, term, score))
    return rows
