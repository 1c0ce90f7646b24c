"""Which workspace and run the user has open, remembered across refreshes, restarts and pages.

Streamlit forgets ``st.session_state`` on a browser refresh, so the place is kept in three layers, first
found wins: the URL (``?ws=<folder>&run=<id>`` on every page, bookmarkable, survives a refresh: links
between pages carry it, and a page opened from the sidebar, whose links leave it out, puts it back), the
session (survives moving between pages), and a small ``last_opened.json`` in the data directory, one entry
per user (survives a server restart and a new tab). Workspaces are opened once per server process
(``st.cache_resource``); a page gets a handle acting for the signed-in user (``Workspace.as_user``), so every
engine call it makes is checked and recorded under their name.

A workspace the user may not see is never opened: a ``?ws=`` naming it (or naming no workspace at all, or
reaching outside the data folder) gets the same "no workspace here" answer, so the address tells nothing.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import streamlit as st

from tac_core import atomic
from tac_core.errors import TacError
from tac_core.workspace.workspace import Workspace, data_dir, open_workspace
from ui import identity
from ui.safe_text import esc

LOG = logging.getLogger("tac_studio")
_LAST_OPENED = "last_opened.json"


@st.cache_resource(show_spinner=False)
def _open(path: str) -> Workspace:
    return open_workspace(path)


def forget_workspace(path: Path | str) -> None:
    """Drop the cached handles (after a rename or delete) so the next open reads the folder afresh.

    The dropped handle's connections are closed (a folder with open files cannot be deleted on Windows);
    another session still holding it reopens them lazily.
    """
    try:
        if (Path(path) / "workspace.db").exists():
            _open(str(path)).close()
    except TacError:
        pass
    _open.clear()
    if st.session_state.get("workspace") == str(path):
        st.session_state.pop("workspace", None)
        st.session_state.pop("run_id", None)
        st.query_params.clear()


def _last_opened_by_user() -> dict:
    try:
        found = json.loads((data_dir() / _LAST_OPENED).read_text(encoding="utf-8")).get("by_user", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return found if isinstance(found, dict) else {}


def _last_opened() -> dict:
    user = identity.user()
    entry = _last_opened_by_user().get(user.key) if user else None
    return entry if isinstance(entry, dict) else {}


def _remember(workspace: str, run_id: Optional[int]) -> None:
    st.session_state["workspace"] = workspace
    st.session_state["run_id"] = run_id
    _show_in_url(workspace, run_id)
    user = identity.user()
    if user is None:
        return
    try:
        place = {"workspace": workspace, "run_id": run_id}
        atomic.write_json(data_dir() / _LAST_OPENED, {"by_user": {**_last_opened_by_user(), user.key: place}})
    except OSError:
        LOG.warning("could not remember the last opened workspace in %s", data_dir())


def _url_place(workspace: str, run_id: Optional[int]) -> dict[str, str]:
    return {"ws": Path(workspace).name, **({} if run_id is None else {"run": str(run_id)})}


def _show_in_url(workspace: str, run_id: Optional[int]) -> None:
    st.query_params["ws"] = Path(workspace).name
    if run_id is None:
        st.query_params.pop("run", None)
    else:
        st.query_params["run"] = str(run_id)


def url_params() -> dict[str, str]:
    """The URL's ``ws`` and ``run``: links to another page carry them, so that page survives a refresh too."""
    return {key: st.query_params[key] for key in ("ws", "run") if key in st.query_params}


def set_workspace(path: Path | str) -> None:
    """Make ``path`` the open workspace (the caller listed it for this user; opening checks again)."""
    _remember(str(Path(path)), None)


def set_run(run_id: Optional[int]) -> None:
    workspace = st.session_state.get("workspace")
    if workspace:
        _remember(workspace, None if run_id is None else int(run_id))


def _candidate() -> tuple[Optional[str], Optional[int], bool]:
    """The workspace folder to open, its run, and whether the address asked for it."""
    if "ws" in st.query_params:
        run, name = st.query_params.get("run"), st.query_params["ws"]
        folder = name if name == Path(name).name and not name.startswith(".") else ""  # one plain folder name
        return str(data_dir() / folder) if folder else "", int(run) if run and run.isdigit() else None, True
    if st.session_state.get("workspace"):
        return st.session_state["workspace"], st.session_state.get("run_id"), False
    last = _last_opened()
    return last.get("workspace"), last.get("run_id"), False


def for_user(path: str | Path) -> Optional[Workspace]:
    """The workspace at ``path`` acting for the signed-in user, or None when it is not one they may see."""
    if not (Path(path) / "workspace.db").is_file() or Path(path).parent.resolve() != data_dir().resolve():
        return None
    workspace = _open(str(path)).as_user(identity.user(), identity.session_id())
    return workspace if workspace.allows("view") else None


def claim(path: str | Path) -> None:
    """Claim the unclaimed workspace at ``path`` for the signed-in user (the engine says who may)."""
    _open(str(path)).as_user(identity.user(), identity.session_id()).claim()


def current_workspace() -> Optional[Workspace]:
    """The open workspace (acting for the signed-in user), or None when there is none, it was deleted or is
    unreadable, or the user may not see it."""
    path, run_id, asked = _candidate()
    try:
        workspace = for_user(path) if path else None
    except TacError as exc:
        st.warning(f"The last workspace could not be opened: {esc(exc)}")
        return None
    if workspace is None:
        if asked:  # the same words whether it exists or not: the address tells nothing
            st.warning("There is no workspace at this address that you may open. Choose one on the home page.")
            st.query_params.clear()
        if st.session_state.get("workspace") == path:
            st.session_state.pop("workspace", None)
            st.session_state.pop("run_id", None)
        return None
    if st.session_state.get("workspace") != path or st.session_state.get("run_id") != run_id:
        _remember(path, run_id)
    elif url_params() != _url_place(path, run_id):  # the sidebar's links leave the parameters out
        _show_in_url(path, run_id)
    return workspace


def require_workspace() -> Workspace:
    """The open workspace; otherwise a pointer to the home page, and the page stops here."""
    workspace = current_workspace()
    if workspace is None:
        st.info("Open or create a workspace on the home page first.")
        st.page_link("pages/workspaces.py", label="Go to workspaces")
        st.stop()
    return workspace


def current_run_id(workspace: Workspace, finished_only: bool = True) -> Optional[int]:
    """The run the user picked (if it still exists), else the newest finished run."""
    runs = workspace.runs()
    if finished_only and not runs.empty:
        runs = runs[runs["status"] == "done"]
    if runs.empty:
        return None
    chosen = st.session_state.get("run_id")
    if chosen is not None and int(chosen) in set(runs["id"].astype(int)):
        return int(chosen)
    return int(runs["id"].astype(int).max())


def show_error(exc: BaseException, doing: str) -> None:
    """A user's error in plain words; an engine bug as one line, with the traceback only in the server log."""
    if isinstance(exc, TacError):
        st.error(f"Could not {doing}: {esc(exc)}")  # messages name files and values a user typed
    else:
        LOG.exception("unexpected failure while trying to %s", doing)
        st.error(f"Could not {doing} because of an unexpected problem ({type(exc).__name__}). "
                 "Your work so far is saved; the details are in the server log.")
