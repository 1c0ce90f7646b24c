"""``python -m tac_core workspace approve|withdraw|approvals|setting``: cluster sign-off from a shell, so a plant can
script it like every other step::

    python -m tac_core workspace setting "Line 3" two_person_rule on   # admins: approver ≠ last editor
    python -m tac_core workspace approve "Line 3" 0 2 --run 1          # prints each approval's event id
    python -m tac_core workspace withdraw "Line 3" 2 --reason "mixed with stains"
    python -m tac_core workspace approvals "Line 3" > approvals.csv
    python -m tac_core workspace export "Line 3" --approved-only --zip

``approve`` and ``withdraw`` record the same events as the Review page's buttons
(:meth:`~tac_core.workspace.review.ReviewSession.approve`, :mod:`tac_core.workspace.sign_off`), as the user the
CLI acts for (in ``local`` mode the operating-system user). ``approvals`` lists every cluster of the run: approved
or not, by whom and when, and the last withdrawal with its reason. Output as the other verbs: what a verb made
on stdout, messages on stderr, lists as spreadsheet-safe CSV.
"""
from __future__ import annotations

import sys

from ..workspace.review import ReviewSession
from ..workspace.sign_off import approvals_table
from ..workspace.workspace import SETTINGS, Workspace
from . import workspace_cli

VERBS = ("approve", "withdraw", "approvals", "setting")


def add_verbs(verbs, named) -> None:
    """Register the sign-off verbs and ``setting`` on the workspace verbs."""
    approve = verbs.add_parser("approve", parents=[named], help="sign clusters off (approvers and admins); prints "
                                                                "each approval's event id")
    withdraw = verbs.add_parser("withdraw", parents=[named], help="take clusters' approvals back (approvers and "
                                                                  "admins); prints each event id")
    withdraw.add_argument("--reason", default="", help="why, recorded with the withdrawal")
    for parser in (approve, withdraw):
        parser.add_argument("clusters", nargs="+", type=int, metavar="CLUSTER", help="cluster id")
    approvals = verbs.add_parser("approvals", parents=[named], help="every cluster's sign-off, as CSV")
    for parser in (approve, withdraw, approvals):
        parser.add_argument("--run", type=int, help="run id (default: the newest finished run)")
    setting = verbs.add_parser("setting", parents=[named], help="print a workspace setting, or set it (admins)",
                               description="Settings: " + "; ".join(f"{k}: {v}" for k, v in SETTINGS.items()))
    setting.add_argument("key", choices=sorted(SETTINGS))
    setting.add_argument("value", nargs="?", help="the new value (\"\" clears it); leave out to print it")


def run_verb(workspace: Workspace, args) -> int:
    """Run one of :data:`VERBS` on an open workspace."""
    if args.verb == "setting":
        if args.value is not None:
            workspace.set_setting(args.key, args.value)
            print(f"{args.key} set to {args.value.strip()!r}", file=sys.stderr)
        print(workspace.setting(args.key))
        return 0
    session = ReviewSession(workspace, workspace_cli.newest_done(workspace, args.run), session_id="cli")
    if args.verb == "approvals":
        table = approvals_table(session.state)
        workspace_cli.write_csv(list(table.columns), table.itertuples(index=False, name=None))
        return 0
    for cluster in args.clusters:
        edit = session.approve(cluster) if args.verb == "approve" else session.withdraw(cluster, args.reason)
        print(edit.event_id)
        print(f"run {session.run_id}: {edit.text}", file=sys.stderr)
    return 0
