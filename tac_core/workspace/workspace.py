"""Workspaces: one folder per project holding everything a user decided, so nothing is lost to a refresh.

A workspace folder holds::

    workspace.db   SQLite (schema in tac_core.workspace.store): sources, images, vocabulary sets, runs, review events
    cache/         the embedding cache (``cache_root`` of tac_core.embedding.embed)
    thumbs/        thumbnails
    files/         uploaded files and extracted zips
    runs/<id>/     a run's arrays as .npy (embeddings, counterparts, probabilities, the layout, ...)
    exports/       label CSVs and their manifests

Workspaces live in :func:`data_dir`: ``$TAC_STUDIO_DATA`` when set, else ``%LOCALAPPDATA%\\TAC Studio\\workspaces``
on Windows and ``~/.tac_studio/workspaces`` elsewhere. A folder is named by an ASCII slug of the workspace name
plus a random suffix, so no name (slashes, "..", unicode, markup) can reach outside the data directory; the
name itself is stored as text in the database and renaming never moves the folder. Creation builds the
folder under a hidden name and renames it into place, so a crash never leaves a half-made workspace listed.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
import sys
import unicodedata
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from ..errors import InvalidInputError
from .access import (AccessDeniedError, AccessMixin, User, add_creator, auth_mode, default_user, is_server_admin,
                     resolve_role)
from .activity import ActivityMixin, record_activity
from .images import AddedImages, ImagesMixin
from .sign_off import TWO_PERSON_RULE
from .store import (ConnectionPool, WorkspaceUnreadableError, connect, damaged_database, migrate, to_json,
                    transaction, utc_now, validate_name)
from .runs import RunsMixin

__all__ = ["DB_NAME", "AddedImages", "NameTakenError", "Workspace", "WorkspaceInfo", "WorkspaceUnreadableError",
           "create_workspace", "data_dir", "delete_workspace", "list_workspaces", "open_workspace", "rename_workspace",
           "validate_name"]

DB_NAME = "workspace.db"
SUBFOLDERS = ("cache", "thumbs", "files", "runs", "exports")
SETTINGS = {  # in the meta table
    "ray_address": "the Ray cluster runs embed images and vocabulary on (empty: this machine)",
    TWO_PERSON_RULE: "on: a cluster's approver must not be who made its last edit (empty or off: anyone may)"}
SETTING_CHOICES = {TWO_PERSON_RULE: ("on", "off")}  # settings that take one of a few values


class NameTakenError(InvalidInputError):
    """Another workspace has this name (the message names neither it nor where it is: it may not be yours)."""


@dataclass(frozen=True)
class WorkspaceInfo:
    """One entry of :func:`list_workspaces`; ``error`` says why a broken folder could not be read. Listed for a
    user, ``role`` is theirs ("" when they may only claim it, an unclaimed workspace shown to a server admin)."""

    name: str
    path: Path
    created: str
    image_count: int
    run_count: int
    error: str = ""
    members: int = 0
    role: str = ""


def data_dir() -> Path:
    """Where workspaces live: ``$TAC_STUDIO_DATA``, else the per-user default of this platform."""
    override = os.environ.get("TAC_STUDIO_DATA", "").strip()
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "TAC Studio" / "workspaces"
    return Path.home() / ".tac_studio" / "workspaces"


def list_workspaces(root: str | os.PathLike | None = None, user: Optional[User] = None) -> list[WorkspaceInfo]:
    """Every workspace folder in ``root`` (default :func:`data_dir`) by name; broken ones carry an error.

    With ``user``, only those the user may see, each with their role: members see theirs; an unclaimed or broken
    one shows in ``local`` mode (as its admin) and otherwise only to a server admin, who may claim or delete it.
    """
    root = _root(root)
    if not root.is_dir():
        return []
    infos = [_read_info(entry, user) for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")]
    if user is not None:
        local = auth_mode() == "local"
        infos = [i for i in infos if i.role or ((i.error or not i.members) and (local or is_server_admin(user)))]
    return sorted(infos, key=lambda info: (info.name.casefold(), str(info.path)))


def create_workspace(name: str, root: str | os.PathLike | None = None, creator: Optional[User] = None) -> "Workspace":
    """Make a new, empty workspace whose admin is ``creator`` (default: the engine's default user, see
    :mod:`tac_core.workspace.access`); the name must be unique (ignoring case) in ``root``."""
    name = validate_name(name)
    creator = default_user() if creator is None else creator
    if creator is None:
        raise AccessDeniedError("nobody is signed in; sign in to create a workspace.")
    root = _root(root)
    root.mkdir(parents=True, exist_ok=True)
    _check_name_free(name, root)
    token = secrets.token_hex(4)
    staging, final = root / f".creating-{token}", root / f"{_slug(name)}-{token}"
    staging.mkdir()
    try:
        for sub in SUBFOLDERS:
            (staging / sub).mkdir()
        conn = connect(staging / DB_NAME)
        try:
            migrate(conn, staging / DB_NAME)
            with transaction(conn):
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                                 [("name", name), ("created", utc_now())])
                add_creator(conn, creator)
                record_activity(conn, creator, "", "workspace created", {"name": name})
        finally:
            conn.close()
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Workspace(final, user=creator)


def open_workspace(path_or_name: str | os.PathLike, root: str | os.PathLike | None = None,
                   user: Optional[User] = None) -> "Workspace":
    """Open a workspace by its folder or by its name in ``root`` (default :func:`data_dir`), acting for ``user``
    (default: the engine's default user)."""
    return Workspace(_resolve(path_or_name, root, require_db=True), user=user)


def rename_workspace(path_or_name: str | os.PathLike, new_name: str, root: str | os.PathLike | None = None,
                     user: Optional[User] = None) -> None:
    """Change the displayed name (admins only); the folder stays where it is, so open sessions keep working."""
    new_name = validate_name(new_name)
    path = _resolve(path_or_name, root, require_db=True)
    with Workspace(path, user=user) as workspace:
        workspace.require("rename")
        if workspace.name.casefold() != new_name.casefold():
            _check_name_free(new_name, path.parent)
        with workspace.transaction() as conn:
            workspace.require("rename", conn=conn)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'name'", (new_name,))
            workspace.record("renamed", {"name": new_name}, conn=conn)


def delete_workspace(path_or_name: str | os.PathLike, root: str | os.PathLike | None = None,
                     user: Optional[User] = None) -> None:
    """Remove a workspace folder and everything in it (admins only; the caller asks the user first).

    A folder whose database cannot be read has no members to ask: in ``local`` mode anyone may remove it, when
    users sign in only a server admin. The folder is first renamed to a hidden name, so a crash half-way never
    leaves a half-deleted workspace listed. Only a folder holding a ``workspace.db`` or a listed (broken) entry
    of the data directory is removed.
    """
    path = _resolve(path_or_name, root, require_db=False)
    try:
        with Workspace(path, user=user) as workspace:
            workspace.require("delete")
    except (InvalidInputError, WorkspaceUnreadableError):  # no readable database: a broken folder
        user = default_user() if user is None else user
        if auth_mode() != "local" and not is_server_admin(user):
            raise AccessDeniedError("only a server admin may delete a workspace whose database cannot be read.")
    doomed = path.parent / f".deleting-{secrets.token_hex(4)}"
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


class Workspace(ImagesMixin, RunsMixin, AccessMixin, ActivityMixin, AbstractContextManager):
    """An open workspace acting for one user (:mod:`tac_core.workspace.access`): the folders and the database, with
    one SQLite connection per thread."""

    def __init__(self, path: str | os.PathLike, user: Optional[User] = None, session: str = "") -> None:
        self._init_access(user, session)
        self.path = Path(path).expanduser().resolve()
        self.db_path = self.path / DB_NAME
        if not self.db_path.is_file():
            raise InvalidInputError(f"{self.path} is not a TAC Studio workspace: it has no {DB_NAME}. Choose a "
                                    "workspace folder or create a new workspace.")
        self._pool = ConnectionPool(self.db_path)
        try:
            migrate(self.connection(), self.db_path)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise damaged_database(self.db_path, str(exc)) from exc
        except BaseException:
            self.close()
            raise
        for sub in SUBFOLDERS:
            (self.path / sub).mkdir(exist_ok=True)

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection this object opened (any thread); it reopens lazily if used again."""
        self._pool.close()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, for reads by the engine's own modules (review, export)."""
        return self._pool.get()

    def transaction(self):
        """A write transaction on this thread's connection (``with workspace.transaction() as conn:``)."""
        return transaction(self.connection())

    # -- folders and identity --------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def thumbs_dir(self) -> Path:
        return self.path / "thumbs"

    @property
    def files_dir(self) -> Path:
        return self.path / "files"

    @property
    def exports_dir(self) -> Path:
        return self.path / "exports"

    @property
    def name(self) -> str:
        return self._meta("name")

    @property
    def created(self) -> str:
        return self._meta("created")

    def setting(self, key: str) -> str:
        """A workspace-level setting (see :data:`SETTINGS`), "" when it is not set."""
        self._check_setting(key)
        row = self.connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return "" if row is None else row[0]

    def set_setting(self, key: str, value: str) -> None:
        """Store a setting at once (stripped; "" removes it); admins only: a setting decides where the
        workspace's images are sent to be computed, or who may approve a cluster."""
        self._check_setting(key)
        choices = SETTING_CHOICES.get(key, ())
        if choices and str(value).strip() not in ("", *choices):
            raise InvalidInputError(f"the setting {key} is one of {', '.join(choices)}, not {str(value).strip()!r}.")
        with self.transaction() as conn:
            self.require("settings", conn=conn)
            conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            if str(value).strip():
                conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, str(value).strip()))
            self.record("setting changed", {key: str(value).strip()}, conn=conn)

    @staticmethod
    def _check_setting(key: str) -> None:
        if key not in SETTINGS:
            raise InvalidInputError(f"{key!r} is not a workspace setting; known: {', '.join(SETTINGS)}.")

    def _meta(self, key: str) -> str:
        row = self.connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise damaged_database(self.db_path, f"it has no {key!r}")
        return row[0]

    # -- vocabulary sets -------------------------------------------------------------------------------
    def save_vocab_set(self, name: str, spec: dict) -> int:
        """Store ``spec`` (JSON) under ``name``, replacing an earlier one (reviewers and up); returns its new
        version number."""
        name = validate_name(name, "vocabulary set name")
        if not isinstance(spec, dict):
            raise InvalidInputError(f"the vocabulary set {name!r} must be a dict, not {type(spec).__name__}.")
        text = to_json(spec, f"vocabulary set {name!r}")
        now = utc_now()
        with self.transaction() as conn:
            self.require("vocabulary", conn=conn)
            row = conn.execute("SELECT version FROM vocab_sets WHERE name = ?", (name,)).fetchone()
            version = 1 if row is None else row[0] + 1
            conn.execute("INSERT INTO vocab_sets (name, spec, version, created, updated) VALUES (?, ?, ?, ?, ?) "
                         "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, version = excluded.version, "
                         "updated = excluded.updated", (name, text, version, now, now))
            self.record("vocabulary saved", {"name": name, "version": version}, conn=conn)
        return version

    def vocab_sets(self) -> pd.DataFrame:
        return self._frame("SELECT name, version, created, updated FROM vocab_sets ORDER BY name")

    def load_vocab_set(self, name: str) -> dict:
        row = self.connection().execute("SELECT spec FROM vocab_sets WHERE name = ?", (name,)).fetchone()
        if row is None:
            known = ", ".join(self.vocab_sets()["name"]) or "none yet"
            raise InvalidInputError(f"there is no vocabulary set named {name!r} in this workspace (saved: {known}).")
        return json.loads(row[0])

    def _frame(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        cur = self.connection().execute(sql, params)
        return pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])


def _root(root: str | os.PathLike | None) -> Path:
    return (Path(root) if root is not None else data_dir()).expanduser().resolve()


def _slug(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:40].strip("-") or "workspace"


def _check_name_free(name: str, root: Path) -> None:
    if any(info.name.casefold() == name.casefold() for info in list_workspaces(root) if not info.error):
        raise NameTakenError(f"a workspace named {name!r} already exists; choose another name.")


def _resolve(path_or_name: str | os.PathLike, root: str | os.PathLike | None, require_db: bool) -> Path:
    """A workspace folder from a path or a name; without ``require_db`` a listed broken folder also counts."""
    root = _root(root)
    candidate = Path(path_or_name).expanduser()
    if (candidate / DB_NAME).is_file():
        return candidate.resolve()
    infos = list_workspaces(root)
    if candidate.is_dir() and not require_db:
        if any(info.path.resolve() == candidate.resolve() for info in infos):
            return candidate.resolve()
    matches = [info for info in infos if info.name == str(path_or_name)] or \
              [info for info in infos if info.name.casefold() == str(path_or_name).casefold()]
    if len(matches) == 1 and (not require_db or not matches[0].error):
        return matches[0].path.resolve()
    if matches:
        raise InvalidInputError(f"the workspace {str(path_or_name)!r} cannot be opened: {matches[0].error}")
    names = ", ".join(repr(info.name) for info in infos) or "none yet"
    raise InvalidInputError(f"there is no workspace {str(path_or_name)!r} in {root} (workspaces: {names}); "
                            "create it or choose an existing one.")


def _read_info(folder: Path, user: Optional[User] = None) -> WorkspaceInfo:
    """Summary of one folder (and ``user``'s role there); any problem becomes an error note so one bad folder
    never hides the others."""
    db_path = folder / DB_NAME
    if not db_path.is_file():
        return WorkspaceInfo(folder.name, folder, "", 0, 0, f"no {DB_NAME}: not a workspace, or it was damaged")
    try:
        conn = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            images = conn.execute("SELECT COUNT(*) FROM images WHERE status = 'ok'").fetchone()[0]
            runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            has_members = conn.execute("SELECT name FROM sqlite_master WHERE name = 'members'").fetchone()
            members = dict(conn.execute("SELECT key, role FROM members").fetchall()) if has_members else {}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return WorkspaceInfo(folder.name, folder, "", 0, 0, f"cannot read {DB_NAME}: {exc}")
    if "name" not in meta:
        return WorkspaceInfo(folder.name, folder, "", images, runs, f"{DB_NAME} has no workspace name")
    role = resolve_role(members.get(user.key), bool(members)) if user is not None else None
    return WorkspaceInfo(meta["name"], folder, meta.get("created", ""), images, runs, members=len(members),
                         role=role.label if role else "")
