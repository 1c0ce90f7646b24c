"""What the signed-in user may do in the open workspace, for the pages: one call at the top of a page, then
``disabled=`` on each action widget. The engine checks every change again (``Workspace.require``)."""
from __future__ import annotations

import streamlit as st

from tac_core.workspace.access import AccessDeniedError
from tac_core.workspace.workspace import Workspace
from ui.safe_text import esc


def why_not(workspace: Workspace, action: str) -> str:
    """Why the user may not do ``action`` here (the engine's words), or "" when they may."""
    try:
        workspace.require(action)
    except AccessDeniedError as exc:
        return str(exc)
    return ""


def allows(workspace: Workspace, action: str) -> bool:
    return workspace.allows(action)


def notice(workspace: Workspace, action: str) -> bool:
    """Whether the user may do ``action``; when not, one line at the top of the page says why."""
    reason = why_not(workspace, action)
    if reason:
        st.info(esc(f"Read only: {reason}"))
    return not reason


def help_text(reason: str, otherwise: str | None = None) -> str | None:
    """A widget's help: the reason it is disabled (escaped: help renders Markdown), else its usual help."""
    return esc(reason) if reason else otherwise
