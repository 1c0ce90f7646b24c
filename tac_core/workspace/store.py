"""SQLite plumbing of a workspace: connections, transactions and the versioned schema.

One database file per workspace, in WAL mode: readers (the app's browser sessions) never block the one
writer at a time (another session's edit, a job subprocess reporting progress), and a crash at any point,
SIGKILL included, leaves every committed transaction intact. ``synchronous=FULL`` makes each commit durable
on disk before the call that made it returns, so an acknowledged edit survives a power cut too.

Connections are per thread (Streamlit runs each browser session, even each rerun, in its own thread) and
per process (a connection must never cross a fork). Writes go through :func:`transaction`, which takes the
write lock up front (``BEGIN IMMEDIATE``) so a read-then-write never fails half-way on a lock upgrade.
The rules for text a user stores (names, JSON) live here too, so every table applies the same ones.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import threading
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..errors import InvalidInputError, TacError

BUSY_TIMEOUT_MS = 30_000
MAX_NAME_LENGTH = 100
_LINE_SEPARATORS = frozenset("\u2028\u2029")  # Zl, Zp: break a line like a control character

# Each migration is a tuple of statements; migration i brings the schema from version i to i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE sources (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('folder', 'upload', 'zip', 'path')),
            location TEXT NOT NULL,
            root TEXT NOT NULL,
            added TEXT NOT NULL)""",
        """CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            source_id INTEGER NOT NULL REFERENCES sources(id),
            path TEXT NOT NULL,
            rel_path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('ok', 'skipped', 'duplicate')),
            reason TEXT NOT NULL,
            duplicate_of INTEGER REFERENCES images(id))""",
        "CREATE UNIQUE INDEX images_ok_sha256 ON images(sha256) WHERE status = 'ok'",
        "CREATE INDEX images_status ON images(status)",
        """CREATE TABLE vocab_sets (
            name TEXT PRIMARY KEY,
            spec TEXT NOT NULL,
            version INTEGER NOT NULL,
            created TEXT NOT NULL,
            updated TEXT NOT NULL)""",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            parent_run_id INTEGER REFERENCES runs(id),
            params TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled')),
            error TEXT,
            pid INTEGER,
            stage TEXT NOT NULL DEFAULT '',
            done INTEGER NOT NULL DEFAULT 0,
            total INTEGER NOT NULL DEFAULT 0,
            n_images INTEGER NOT NULL,
            n_clusters INTEGER,
            created TEXT NOT NULL,
            started TEXT,
            finished TEXT)""",
        """CREATE TABLE run_images (
            run_id INTEGER NOT NULL REFERENCES runs(id),
            position INTEGER NOT NULL,
            image_id INTEGER NOT NULL REFERENCES images(id),
            PRIMARY KEY (run_id, position)) WITHOUT ROWID""",
        """CREATE TABLE assignments (
            run_id INTEGER NOT NULL REFERENCES runs(id),
            position INTEGER NOT NULL,
            image_id INTEGER NOT NULL REFERENCES images(id),
            cluster INTEGER NOT NULL,
            confidence REAL NOT NULL,
            PRIMARY KEY (run_id, position)) WITHOUT ROWID""",
        """CREATE TABLE anchors (
            run_id INTEGER NOT NULL REFERENCES runs(id),
            cluster INTEGER NOT NULL,
            rank INTEGER NOT NULL,
            term TEXT NOT NULL,
            score REAL NOT NULL,
            PRIMARY KEY (run_id, cluster, rank)) WITHOUT ROWID""",
        """CREATE TABLE clusters (
            run_id INTEGER NOT NULL REFERENCES runs(id),
            cluster INTEGER NOT NULL,
            name TEXT NOT NULL,
            PRIMARY KEY (run_id, cluster)) WITHOUT ROWID""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            ts TEXT NOT NULL,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            session TEXT NOT NULL)""",
        "CREATE INDEX events_run ON events(run_id, id)",
    ),
    (  # 2: users and roles (tac_core.workspace.access); a person behind every decision (activity, events)
        """CREATE TABLE members (
            key TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            email TEXT NOT NULL DEFAULT '',
            role TEXT NOT NULL CHECK (role IN ('viewer', 'reviewer', 'approver', 'admin')),
            added TEXT NOT NULL,
            added_by TEXT NOT NULL)""",
        """CREATE TABLE activity (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts TEXT NOT NULL,
            user_name TEXT NOT NULL,
            user_email TEXT NOT NULL,
            session TEXT NOT NULL,
            action TEXT NOT NULL,
            run_id INTEGER,
            detail TEXT NOT NULL)""",
        "CREATE INDEX activity_run ON activity(run_id, id)",
        "ALTER TABLE events ADD COLUMN user_name TEXT NOT NULL DEFAULT ''",  # '' (old events) reads "unknown"
        "ALTER TABLE events ADD COLUMN user_email TEXT NOT NULL DEFAULT ''",
    ),
    (  # 3: image metadata (tac_core.workspace.metadata): one text value per image and field, and what was applied
        """CREATE TABLE image_metadata (
            image_id INTEGER NOT NULL REFERENCES images(id),
            field TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (image_id, field)) WITHOUT ROWID""",
        "CREATE INDEX image_metadata_field ON image_metadata(field, value)",
        """CREATE TABLE metadata_sources (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('pattern', 'csv')),
            description TEXT NOT NULL,
            fields TEXT NOT NULL,
            images INTEGER NOT NULL,
            added TEXT NOT NULL)""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class WorkspaceUnreadableError(TacError):
    """A file of the workspace (its database, a run array) is damaged or was written by a newer TAC Studio."""


class WorkspaceBusyError(TacError):
    """Another process held the workspace's write lock for longer than the busy timeout."""


def damaged_database(db_path: str | os.PathLike, detail: str) -> WorkspaceUnreadableError:
    return WorkspaceUnreadableError(f"cannot read the workspace database {db_path}: {detail}. Restore the folder "
                                    "from a backup or delete the workspace.")


def utc_now() -> str:
    """UTC time as ISO 8601 with milliseconds: sortable as text and unambiguous across time zones."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def to_json(value: object, what: str) -> str:
    """Strict JSON text (no NaN), or :class:`InvalidInputError` naming what could not be stored."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"the {what} cannot be stored as JSON: {exc}. Use numbers, text, lists and "
                                "dicts only.") from exc


def validate_name(name: object, what: str = "workspace name", max_length: int = MAX_NAME_LENGTH) -> str:
    """The name without surrounding spaces, or :class:`InvalidInputError` if empty, too long or not printable."""
    if not isinstance(name, str):
        raise InvalidInputError(f"the {what} must be text, not {type(name).__name__}.")
    text = name.strip()
    if not text:
        raise InvalidInputError(f"the {what} is empty; type a name.")
    if len(text) > max_length:
        raise InvalidInputError(f"the {what} {text[:40]!r}... is {len(text)} characters long; use at most "
                                f"{max_length}.")
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cs") or c in _LINE_SEPARATORS), None)
    if bad is not None:
        raise InvalidInputError(f"the {what} {text!r} contains the control character U+{ord(bad):04X}; "
                                "remove it.")
    return text


def connect(db_path: str | os.PathLike) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with WAL, busy timeout and foreign keys."""
    conn = sqlite3.connect(os.fspath(db_path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise damaged_database(db_path, str(exc)) from exc
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block as one write transaction: all of it is committed, or none of it."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise WorkspaceBusyError("the workspace is busy: another process kept it locked for "
                                     f"{BUSY_TIMEOUT_MS // 1000} s. Try again in a moment.") from exc
        raise
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def migrate(conn: sqlite3.Connection, db_path: str | os.PathLike) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`, one migration per transaction; returns the version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise WorkspaceUnreadableError(f"the workspace database {db_path} has schema version {version}, newer "
                                       f"than this TAC Studio understands ({SCHEMA_VERSION}); update TAC Studio.")
    while version < SCHEMA_VERSION:
        with transaction(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            if version < SCHEMA_VERSION:
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
    return version


class ConnectionPool:
    """One connection per thread of this process to one database file.

    Streamlit runs every script run in a new thread, so the connections of finished threads are closed when
    another thread asks for one. A forked child never touches, not even closes, its parent's connections.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._by_thread: dict[threading.Thread, sqlite3.Connection] = {}
        self._inherited: list[dict] = []  # a parent's connections, kept referenced so they are never closed

    def get(self) -> sqlite3.Connection:
        thread = threading.current_thread()
        with self._lock:
            if self._pid != os.getpid():
                self._inherited.append(self._by_thread)
                self._by_thread, self._pid = {}, os.getpid()
            conn = self._by_thread.get(thread)
            if conn is None:
                for finished in [t for t in self._by_thread if not t.is_alive()]:
                    _close(self._by_thread.pop(finished))
                conn = self._by_thread[thread] = connect(self.db_path)
        return conn

    def close(self) -> None:
        with self._lock:
            connections, self._by_thread = list(self._by_thread.values()), {}
        for conn in connections:
            _close(conn)


def _close(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.close()


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs now (a zombie counts as gone); used to spot interrupted runs."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal check above is all there is


def _windows_process_alive(pid: int) -> bool:
    """``os.kill(pid, 0)`` would terminate the process on Windows, so ask the kernel instead."""
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
