"""Cluster sign-off: an approver approves a cluster, and any later change to that cluster withdraws the approval.

"Verified" says a reviewer checked a cluster's images; *approved* says a person with the ``approver`` role
(:mod:`tac_core.workspace.access`, action ``sign_off``) accepts the cluster as a class a model may be trained on.
Approvals are events of the run's review log (``approve`` and ``withdraw``, written by
:meth:`~tac_core.workspace.review.ReviewSession.approve` and ``withdraw``), so they replay, undo and redo like
any edit, and the event-log hash of an export bundle covers them. The rules:

- Approving needs the ``sign_off`` action and a cluster that is not approved now. With the workspace's
  **two-person rule** on (setting ``two_person_rule`` = ``on``; admins change settings) the approver must not be
  the person who made the cluster's *last edit*: the latest edit in effect that touched it (an undone edit is
  not in effect; a redone one counts with its own author). A cluster no edit touched yet, the run's result as it
  is, may be approved by any approver.
- Any other event that touches an approved cluster, as :func:`~tac_core.workspace.review_log.touched` says
  (a move in or out, a rename, a merge as source or target, a split, an exclude or verify of images in it, the
  cluster verified or not, an intake adding images to it), withdraws the approval as it is applied; its
  description says so and :attr:`SignOffs.withdrawn` keeps why. Undoing that event brings the approval back,
  because the cluster is then again exactly what was approved (undo is last-in, first-out).
- ``withdraw`` takes an approval back by hand (approvers and admins), with an optional reason. Undoing or
  redoing an ``approve`` or ``withdraw`` needs the ``sign_off`` action as well as the usual undo rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Optional

import pandas as pd

from ..errors import InvalidInputError
from .access import AccessDeniedError, User, user_key
from .store import WorkspaceUnreadableError, validate_name

if TYPE_CHECKING:
    from .review_state import ReviewState

SIGN_OFF_KINDS = ("approve", "withdraw")
TWO_PERSON_RULE = "two_person_rule"  # the workspace setting: "on", or not set (off)
MAX_REASON_LENGTH = 200
APPROVAL_COLUMNS = ("cluster", "name", "approved", "approved_by", "approved_email", "approved_at", "approval_event",
                    "withdrawn_at", "withdrawn_by", "withdrawn_event", "withdrawn_because")
Revert = Callable[[], None]


@dataclass(frozen=True)
class Stamp:
    """Who made an event and when: its id, the user's name (``"unknown"`` before users existed) and e-mail, UTC time."""

    event_id: int
    user: str
    email: str
    ts: str


@dataclass(frozen=True)
class Approval:
    """A cluster's sign-off: the cluster and the ``approve`` event (who, when)."""

    cluster: int
    stamp: Stamp


@dataclass(frozen=True)
class Withdrawal:
    """An approval taken back: the approval, the event that took it back, and why (that event's description, or
    the reason given with a withdrawal by hand)."""

    approval: Approval
    stamp: Stamp
    reason: str


@dataclass
class SignOffs:
    """The approvals in effect, by cluster id, and each cluster's last withdrawal (until it is approved again)."""

    approved: dict[int, Approval] = field(default_factory=dict)
    withdrawn: dict[int, Withdrawal] = field(default_factory=dict)

    def approve(self, approval: Approval) -> Revert:
        cluster = approval.cluster
        earlier = self.withdrawn.pop(cluster, None)
        self.approved[cluster] = approval

        def revert() -> None:
            del self.approved[cluster]
            if earlier is not None:
                self.withdrawn[cluster] = earlier
        return revert

    def withdraw(self, clusters: Iterable[int], stamp: Stamp, reason: str) -> tuple[Revert, list[Approval]]:
        """Withdraw the approvals of those of ``clusters`` approved now; returns the revert and what was withdrawn."""
        taken = [self.approved.pop(c) for c in sorted(set(clusters)) if c in self.approved]
        for approval in taken:  # an approved cluster has no withdrawal on record: approving cleared it
            self.withdrawn[approval.cluster] = Withdrawal(approval, stamp, reason)

        def revert() -> None:
            for approval in taken:
                self.approved[approval.cluster] = approval
                del self.withdrawn[approval.cluster]
        return revert, taken


def apply_event(state: "ReviewState", kind: str, payload: dict, touched: list[int], stamp: Stamp
                ) -> tuple[Revert, str]:
    """Apply one event of the log that is not an undo or redo: a sign-off, or an edit (withdrawing the approvals
    of the ``touched`` clusters). Returns what reverts exactly it and a sentence describing it."""
    signs = state.sign_offs
    if kind in SIGN_OFF_KINDS:
        cluster = payload["cluster"]
        if cluster not in state.names or (cluster in signs.approved) != (kind == "withdraw"):
            raise WorkspaceUnreadableError(f"review event #{stamp.event_id} ({kind} cluster {cluster}) does not match "
                                           "the log; the workspace database was changed outside TAC Studio.")
        name = state.names[cluster]
        if kind == "approve":
            return signs.approve(Approval(cluster, stamp)), f"approved cluster {cluster} {name!r}"
        reason = payload.get("reason") or ""
        revert, [approval] = signs.withdraw([cluster], stamp, reason or "withdrawn by hand")
        return revert, f"withdrew the approval of cluster {cluster} {name!r} ({_by(approval)})" + \
            (f": {reason}" if reason else "")
    names = {c: state.names.get(c, "") for c in touched}  # before a merge removes its sources
    revert_edit, text = state.apply(kind, payload)
    revert_sign_off, taken = signs.withdraw(touched, stamp, text)
    if not taken:
        return revert_edit, text

    def revert() -> None:
        revert_sign_off()
        revert_edit()
    return revert, text + "".join(f"; this withdrew the approval of cluster {a.cluster} {names[a.cluster]!r} "
                                  f"({_by(a)})" for a in taken)


def _by(approval: Approval) -> str:
    return f"approved by {approval.stamp.user}, #{approval.stamp.event_id}"


def two_person_rule(workspace) -> bool:
    """Whether the workspace's two-person rule is on (its setting ``two_person_rule`` is ``on``)."""
    return workspace.setting(TWO_PERSON_RULE) == "on"


def check_approve(state: "ReviewState", cluster: int, user: User, two_person: bool,
                  last_edit: Optional[tuple[int, str]]) -> None:
    """Refuse approving ``cluster`` when it is approved already, or, under the two-person rule, when ``user`` made
    its ``last_edit`` (event id, author name; None when no edit in effect touched it)."""
    approval = state.sign_offs.approved.get(cluster)
    if approval is not None:
        raise InvalidInputError(f"cluster {cluster} {state.names[cluster]!r} is approved already ({_by(approval)} at "
                                f"{approval.stamp.ts[:16].replace('T', ' ')} UTC).")
    if two_person and last_edit is not None and user_key(last_edit[1]) == user.key:
        raise AccessDeniedError(f"the two-person rule is on in this workspace and {user.name} made the last edit of "
                                f"cluster {cluster} (#{last_edit[0]}), so another approver must approve it.")


def check_withdraw(state: "ReviewState", cluster: int) -> None:
    if cluster not in state.sign_offs.approved:
        raise InvalidInputError(f"cluster {cluster} {state.names[cluster]!r} is not approved; there is no approval "
                                "to withdraw.")


def valid_reason(reason: Optional[str]) -> str:
    """A withdrawal's reason: "" (none), else a name-like text (one line, at most :data:`MAX_REASON_LENGTH`)."""
    return validate_name(reason, "reason", MAX_REASON_LENGTH) if reason and reason.strip() else ""


def approvals_table(state: "ReviewState") -> pd.DataFrame:
    """One row per existing cluster (:data:`APPROVAL_COLUMNS`): approved or not, who approved it and when, and
    for one not approved now, its last withdrawal (when, by whom, by which event, why); "" and −1 where none."""
    rows = []
    for cluster in sorted(state.names):
        approval = state.sign_offs.approved.get(cluster)
        withdrawal = None if approval else state.sign_offs.withdrawn.get(cluster)
        given = approval.stamp if approval else None
        taken = withdrawal.stamp if withdrawal else None
        rows.append((cluster, state.names[cluster], approval is not None, given.user if given else "",
                     given.email if given else "", given.ts if given else "", given.event_id if given else -1,
                     taken.ts if taken else "", taken.user if taken else "", taken.event_id if taken else -1,
                     withdrawal.reason if withdrawal else ""))
    return pd.DataFrame(rows, columns=list(APPROVAL_COLUMNS))


def manifest_approvals(state: "ReviewState") -> list[dict]:
    """The approvals in effect as an export manifest lists them: cluster, label, approver, e-mail, time, event id."""
    return [{"cluster": cluster, "label": state.names[cluster], "approved_by": a.stamp.user,
             "email": a.stamp.email, "approved_at": a.stamp.ts, "event_id": a.stamp.event_id}
            for cluster, a in sorted(state.sign_offs.approved.items())]
