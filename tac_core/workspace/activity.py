"""The workspace's activity log: a person behind every decision that is not a review edit.

Review edits and audit decisions are events of a run's review log (``events``, :mod:`tac_core.workspace.review`),
which records the user too. Everything else a user decides is one row of ``activity``, written in the same
transaction as the change it describes: the workspace created or claimed, members added, changed or removed,
images added, a vocabulary set saved, a run started, re-run or cancelled, labels exported, the workspace
renamed. Each row keeps the time (UTC), the user's name and e-mail, the browser session and a JSON detail.
Rows written before users existed read as ``"unknown"``.
"""
from __future__ import annotations

import json
from typing import Optional

import pandas as pd

from .access import UNKNOWN, User
from .store import to_json, utc_now


def record_activity(conn, user: Optional[User], session: str, action: str, detail: Optional[dict] = None,
                    run_id: Optional[int] = None) -> int:
    """Append one row to the activity log on ``conn`` (the caller's transaction); returns its id."""
    return conn.execute("INSERT INTO activity (ts, user_name, user_email, session, action, run_id, detail) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (utc_now(), user.name if user else UNKNOWN, user.email if user else "", session or "", action,
                         run_id, to_json(detail or {}, f"{action} record"))).lastrowid


class ActivityMixin:
    """Recording and reading the activity log of :class:`tac_core.workspace.workspace.Workspace`."""

    user: Optional[User]
    session: str

    def record(self, action: str, detail: Optional[dict] = None, run_id: Optional[int] = None,
               user: Optional[User] = None, conn=None) -> int:
        """Append one row by this handle's user (or ``user``), inside ``conn``'s transaction when given, so it
        commits with the change it describes."""
        user = self.user if user is None else user
        if conn is not None:
            return record_activity(conn, user, self.session, action, detail, run_id)
        with self.transaction() as own:
            return record_activity(own, user, self.session, action, detail, run_id)

    def activity(self, run_id: Optional[int] = None) -> pd.DataFrame:
        """The log, oldest first: id, ts, user, email, session, action, run_id and detail (a dict); with
        ``run_id``, only what concerns that run."""
        where, params = ("WHERE run_id = ?", (int(run_id),)) if run_id is not None else ("", ())
        frame = self._frame("SELECT id, ts, user_name AS user, user_email AS email, session, action, run_id, detail "
                            f"FROM activity {where} ORDER BY id", params)
        frame["user"] = frame["user"].replace("", UNKNOWN)
        frame["detail"] = [json.loads(text) for text in frame["detail"]]
        frame["run_id"] = frame["run_id"].astype("Int64")
        return frame
