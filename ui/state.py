"""Which workspace and run the user has open, remembered across refreshes, restarts and pages.

Streamlit forgets ``st.session_state`` on a browser refresh, so the place is kept in three layers, first
found wins: the URL (``?ws=<folder>&run=<id>`` on every page, bookmarkable, survives a refresh: links
between pages carry it, and a page opened from the sidebar, whose links leave it out, puts it back), the
session (survives moving between pages), and a small ``last_opened.json`` in the data directory (survives a
server restart and a new tab). Workspaces are opened once per server process (``st.cache_resource``).
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


def _last_opened() -> dict:
    try:
        return json.loads((data_dir() / _LAST_OPENED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _remember(workspace: str, run_id: Optional[int]) -> None:
    st.session_state["workspace"] = workspace
    st.session_state["run_id"] = run_id
    _show_in_url(workspace, run_id)
    try:
        atomic.write_json(data_dir() / _LAST_OPENED, {"workspace": workspace, "run_id": run_id})
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
    _remember(str(Path(path)), None)


def set_run(run_id: Optional[int]) -> None:
    workspace = st.session_state.get("workspace")
    if workspace:
        _remember(workspace, None if run_id is None else int(run_id))


def _candidate() -> tuple[Optional[str], Optional[int]]:
    if "ws" in st.query_params:
        run = st.query_params.get("run")
        return str(data_dir() / Path(st.query_params["ws"]).name), int(run) if run and run.isdigit() else None
    if st.session_state.get("workspace"):
        return st.session_state["workspace"], st.session_state.get("run_id")
    last = _last_opened()
    return last.get("workspace"), last.get("run_id")


def current_workspace() -> Optional[Workspace]:
    """The open workspace, or None when there is none (or it was deleted or is unreadable)."""
    path, run_id = _candidate()
    if not path or not (Path(path) / "workspace.db").exists():
        return None
    try:
        workspace = _open(path)
    except TacError as exc:
        st.warning(f"The last workspace could not be opened: {esc(exc)}")
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
