"""What an export bundle's ``manifest.json`` records about where its labels came from, and checking it later.

A quality engineer must be able to show, months later, which code, model, vocabulary and review decisions
produced a label file. The manifest records (:func:`provenance`, :func:`review_record`):

- ``app``: ``tac_core.__version__`` and, when this copy runs from a git checkout, the commit and whether the
  checkout had uncommitted changes (``git_commit``/``git_dirty``, else null);
- ``run``: id, times, the seed and the run's parameters as its row stores them, except that model files are
  named by their file name only: an export never holds an absolute path of the server;
- ``model``: name, weights tag, checkpoint file name, and the identity the run's job recorded (architecture
  and ``sha256-…`` of the weights file), with ``weights_sha256`` taken from it;
- ``vocabulary``: the set's name, its number of terms and ``terms_sha256``, the sha256 of the normalised terms
  in order (:meth:`~tac_core.inputs.vocabulary.Vocabulary.fingerprint`, as the run recorded it);
- ``review``: the events applied (undo and redo count as events), the edits in effect, the last event id, and
  ``event_log``: the sha256 of the run's event rows up to that id, each row the JSON list of the listed
  ``columns`` (compact separators, UTF-8) followed by a line feed; the columns include who made each event;
- ``exported_by``: the user's name and e-mail (written by :func:`~tac_core.workspace.bundle.write_bundle`);
- ``approvals``: every cluster approved when the bundle was written (:mod:`tac_core.workspace.sign_off`):
  ``cluster``, ``label``, ``approved_by``, ``email``, ``approved_at`` (UTC) and the ``event_id`` of the
  ``approve`` event, which the event-log hash covers.

:func:`verify_bundle` re-hashes the files a manifest lists and, given the workspace, the event log, and checks
that each approval listed is that ``approve`` event of the log (same cluster, approver and time).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Optional

import tac_core

from ..errors import InvalidInputError
from ..inputs.vocab_spec import build_vocabulary
from .export import file_name
from .workspace import Workspace

FORMAT = "tac-studio-bundle"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
EVENT_COLUMNS = ("id", "run_id", "ts", "kind", "payload", "session", "user_name", "user_email")  # who decided too
_COLUMN_NAME = re.compile(r"[a-z_]+")


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[Optional[str], Optional[bool]]:
    """(commit, has uncommitted changes) of the checkout this copy of tac_core runs from; (None, None) when it
    is not one (an installed package) or git is not available."""
    root = Path(tac_core.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None, None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, None
    commit = head.stdout.strip()
    if head.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}", commit):
        return None, None
    return commit, (bool(status.stdout.strip()) if status.returncode == 0 else None)


def provenance(workspace: Workspace, run_id: int) -> dict:
    """``app``, ``workspace``, ``run``, ``model`` and ``vocabulary`` of the manifest (module docstring)."""
    run = workspace.run(run_id)
    params = dict(run["params"])
    summary = workspace.run_summary(run_id)
    stored = params.get("model") or {}
    model = {"name": file_name(stored.get("name")), "pretrained": stored.get("pretrained"),
             "checkpoint": file_name(stored.get("checkpoint"))}
    if stored:
        params["model"] = dict(model)
    identity = summary.get("model_identity")
    weights = re.search(r"sha256-([0-9a-f]{64})", identity or "")
    model.update(identity=identity, weights_sha256=weights.group(1) if weights else None)
    commit, dirty = git_state()
    return {
        "app": {"name": "TAC Studio", "version": tac_core.__version__, "git_commit": commit, "git_dirty": dirty},
        "workspace": workspace.name,
        "run": {"id": int(run_id), "created": run["created"], "finished": run["finished"],
                "seed": params.get("seed"), "parameters": params},
        "model": model,
        "vocabulary": _vocabulary(params, summary),
    }


def _vocabulary(params: dict, summary: dict) -> dict:
    """The set's name and the hash of its terms: as the run recorded them, else from the set the run copied."""
    n_terms, fingerprint = summary.get("n_vocabulary"), summary.get("vocabulary_fingerprint")
    if fingerprint is None and params.get("vocab_spec"):
        vocabulary = build_vocabulary(params["vocab_spec"])
        n_terms, fingerprint = len(vocabulary), vocabulary.fingerprint()
    return {"set": params.get("vocab_set") or None, "n_terms": n_terms, "terms_sha256": fingerprint}


def event_log_sha256(workspace: Workspace, run_id: int, last_event_id: int,
                     columns: tuple[str, ...] = EVENT_COLUMNS) -> str:
    """The sha256 of the run's event rows with ids up to ``last_event_id`` (module docstring)."""
    if not all(_COLUMN_NAME.fullmatch(c) for c in columns):
        raise InvalidInputError(f"the manifest names event columns {list(columns)} that cannot be columns.")
    digest = hashlib.sha256()
    rows = workspace.connection().execute(f"SELECT {', '.join(columns)} FROM events WHERE run_id = ? AND id <= ? "
                                          "ORDER BY id", (run_id, last_event_id))
    for row in rows:
        digest.update(json.dumps(list(row), ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")
    return digest.hexdigest()


def review_record(workspace: Workspace, run_id: int, history: list[dict], edits_in_effect: int) -> dict:
    """``review`` of the manifest for a review whose applied events are ``history`` (oldest first)."""
    last = int(history[-1]["event_id"]) if history else 0
    return {"events_applied": len(history), "edits_in_effect": int(edits_in_effect), "last_event_id": last,
            "event_log": {"columns": list(EVENT_COLUMNS), "sha256": event_log_sha256(workspace, run_id, last)}}


def verify_bundle(bundle: str | Path, workspace: Optional[Workspace] = None) -> list[str]:
    """What does not match in a bundle (a folder or a zip): every file the manifest lists is re-hashed and,
    given the workspace it came from, the run's event log up to the manifest's last event. [] when all match."""
    with _opened(Path(bundle)) as read:
        try:
            manifest = json.loads(read(MANIFEST_FILE))
        except (KeyError, OSError, ValueError) as exc:
            raise InvalidInputError(f"{bundle} holds no readable {MANIFEST_FILE} ({exc}); give a bundle folder or "
                                    "zip written by TAC Studio.") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise InvalidInputError(f"{bundle}'s {MANIFEST_FILE} is not a TAC Studio bundle manifest.")
        problems = []
        for name, expected in manifest.get("files", {}).items():
            try:
                actual = hashlib.sha256(read(name)).hexdigest()
            except (KeyError, OSError):
                problems.append(f"{name} is missing")
                continue
            if actual != expected:
                problems.append(f"{name} has changed: sha256 {actual}, the manifest says {expected}")
    if workspace is not None:
        review, run_id = manifest["review"], manifest["run"]["id"]
        log = review["event_log"]
        actual = event_log_sha256(workspace, run_id, review["last_event_id"], tuple(log["columns"]))
        if actual != log["sha256"]:
            problems.append(f"the event log of run {run_id} up to event {review['last_event_id']} differs from the "
                            f"one exported: sha256 {actual}, the manifest says {log['sha256']}")
        problems += approval_problems(workspace, run_id, manifest.get("approvals") or [], review["last_event_id"])
    return problems


def approval_problems(workspace: Workspace, run_id: int, approvals: list, last_event_id: int) -> list[str]:
    """The approvals of a manifest that are not an ``approve`` event of the run's log up to ``last_event_id``
    with the same cluster, approver and time, each said in a sentence."""
    problems = []
    for approval in approvals:
        approval = approval if isinstance(approval, dict) else {}
        row = workspace.connection().execute(
            "SELECT kind, payload, user_name, ts FROM events WHERE id = ? AND run_id = ? AND id <= ?",
            (approval.get("event_id"), run_id, last_event_id)).fetchone()
        if row is None or (row[0], json.loads(row[1]).get("cluster"), row[2], row[3]) != (
                "approve", approval.get("cluster"), approval.get("approved_by"), approval.get("approved_at")):
            problems.append(f"the approval of cluster {approval.get('cluster')} by {approval.get('approved_by')} "
                            f"(event #{approval.get('event_id')}) is not an approval in the event log of run {run_id}")
    return problems


@contextlib.contextmanager
def _opened(bundle: Path) -> Iterator[Callable[[str], bytes]]:
    """A function reading a file of the bundle (folder or zip) by its name inside it."""
    if bundle.is_dir():
        yield lambda name: (bundle / name).read_bytes()
        return
    try:
        archive = zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInputError(f"{bundle} is neither a bundle folder nor a readable zip ({exc}).") from exc
    with archive:
        yield archive.read
