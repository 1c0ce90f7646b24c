"""Small drawing helpers shared by the pages: links between pages, safe text, messages that survive a rerun,
progress, thumbnails.

User text (workspace names, file names, terms, labels) is never rendered as markdown or HTML: it goes into
dataframes, ``st.text``/``st.code``, or through :func:`ui.safe_text.esc` where a widget label or message needs it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import streamlit as st

from tac_core.inputs.thumbnails import thumbnail_path
from tac_core.run.job import seconds_left
from ui import state
from ui.safe_text import esc

_FLASH_KEY = "_flash_messages"


def page_link(page: str, tooltip: bool = True) -> None:
    """A link to another page (``"pages/<name>.py"``, labelled with its title and, unless ``tooltip`` is False,
    its tooltip from ``ui/navigation.py``) that keeps the open workspace and run in the URL."""
    st.page_link(page, query_params=state.url_params(), help=None if tooltip else "")


def switch_page(page: str) -> None:
    """Show another page now, keeping the open workspace and run in the URL."""
    st.switch_page(page, query_params=state.url_params())


def sidebar_status(workspace) -> None:
    """Which workspace is open, in the sidebar (as plain text)."""
    with st.sidebar:
        st.caption("Workspace")
        st.text(workspace.name)
        counts = workspace.image_counts()
        role = workspace.role_of()
        st.caption(f"{counts['ok']} usable images · your role: {role.label if role else 'none'}")


# -- messages that survive st.rerun() -----------------------------------------------------------------
def flash(kind: str, text: str) -> None:
    """Show ``text`` (plain, escaped) as st.success/info/warning/error on the next run of the page."""
    st.session_state.setdefault(_FLASH_KEY, []).append((kind, text))


def show_flashes() -> None:
    for kind, text in st.session_state.pop(_FLASH_KEY, []):
        getattr(st, kind)(esc(text))


def attempt(action: Callable[[], object], doing: str) -> tuple[bool, object]:
    """Run ``action``; on failure show the error in plain words (never a traceback) and return (False, None)."""
    try:
        return True, action()
    except Exception as exc:  # noqa: BLE001 - the UI must never show a traceback
        state.show_error(exc, doing)
        return False, None


# -- progress -----------------------------------------------------------------------------------------
def duration(seconds: float) -> str:
    """A duration as people say it: "40 s", "12 min", "2.4 h"."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class ProgressBar:
    """A ``progress(stage, done, total)`` callback drawing one bar with counts and, once a stage has stepped
    forward twice, the time it has left at that pace; at most ~5 updates a second."""

    def __init__(self, placeholder=None) -> None:
        self.placeholder = placeholder or st.empty()
        self.bar = None
        self.last = 0.0
        self.pace: dict[str, tuple[float, int]] = {}  # stage -> (time, done) at its first step forward

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        self.pace.setdefault(stage, (now, done))
        if done < total and now - self.last < 0.2:
            return
        self.last = now
        text = f"{stage}: {done:,} / {total:,}"
        since, done_then = self.pace[stage]
        if done_then < done < total and now - since > 1.0:
            text += f" · about {duration((total - done) * (now - since) / (done - done_then))} left"
        fraction = min(1.0, done / total) if total else 1.0
        if self.bar is None:
            self.bar = self.placeholder.progress(fraction, text=text)
        else:
            self.bar.progress(fraction, text=text)

    def clear(self) -> None:
        self.placeholder.empty()


def stage_bars(expected: Sequence[str], reported: Sequence[dict], status: str) -> None:
    """One bar per stage of a run with its counts, seconds, what was cached already and, while it runs, the time
    left at its own pace; stages not reached say why."""
    if status in ("pending", "running") and not reported:
        st.caption("Starting the job (loading the model libraries takes a few seconds) …")
    seen = {entry["stage"]: entry for entry in reported}
    order = list(expected) + [entry["stage"] for entry in reported if entry["stage"] not in expected]
    last_index = max((order.index(stage) for stage in seen), default=-1)
    for index, stage in enumerate(order):
        entry = seen.get(stage)
        if entry is None:
            note = ("skipped" if index < last_index or status == "done" else
                    "waiting" if status in ("pending", "running") else "not reached")
            st.progress(1.0 if note == "skipped" else 0.0, text=f"{stage}: {note}")
            continue
        total, done = int(entry.get("total", 0)), int(entry.get("done", 0))
        fraction = min(1.0, done / total) if total else 1.0
        text = f"{stage}: {done:,} / {total:,} · {float(entry.get('seconds', 0.0)):.1f} s"
        first = int(entry.get("first_done", 0))
        if first and total and first < total:
            text += f" · {first:,} cached"
        left = seconds_left(entry) if status in ("pending", "running") and done < total else None
        if left is not None:
            text += f" · about {duration(left)} left"
        st.progress(fraction, text=text)


def coverage_column(width: int = 92):
    """A table's "Coverage" column (share of images verified, given as 0–100) in whole per cents, the same on every
    page: "0%", "36%", "100%"."""
    return st.column_config.ProgressColumn("Coverage", format="%d%%", min_value=0, max_value=100, width=width,
                                           help="Share of images verified")


# -- images -------------------------------------------------------------------------------------------
def thumbnail_grid(thumbs_dir: Path, items: Sequence[tuple[str, str]], columns: int = 8,
                   missing: Optional[str] = "no thumbnail") -> None:
    """Thumbnails (sha256, caption) in a grid; captions are escaped file names."""
    if not items:
        return
    cols = st.columns(columns)
    for index, (sha, caption) in enumerate(items):
        path = thumbnail_path(thumbs_dir, sha)
        with cols[index % columns]:
            if path.exists():
                st.image(str(path), caption=esc(caption), width="stretch")
            elif missing:
                st.caption(esc(f"{caption} ({missing})"))
