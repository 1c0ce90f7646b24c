"""Cluster sign-off on the pages (:mod:`tac_core.workspace.sign_off`): the open cluster's approval with Approve /
Withdraw on the Review page, an "Approved" column for its cluster list, and the History page's table of every
cluster's approval with the workspace's two-person rule.

Approve and Withdraw go through ``ui.review_actions.edit_and_redraw`` like every review edit (one event each, the
outcome in the page's message, only the parts it changed redrawn); a user who may not do them sees the button
disabled with the engine's reason.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from tac_core.workspace.access import UNKNOWN
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.sign_off import TWO_PERSON_RULE, approvals_table, two_person_rule
from tac_core.workspace.workspace import Workspace
from ui import access, widgets
from ui import review_actions as actions
from ui.safe_text import esc

REASON = "sign_off_reason"


def when(ts: str) -> str:
    """A stored UTC time as the pages show it: ``2024-06-01 12:00 UTC``."""
    return f"{ts[:16].replace('T', ' ')} UTC" if ts else ""


def approved_column(clusters: pd.DataFrame) -> list[str]:
    """Per row of ``ReviewSession.clusters()``: "<approver> · <time>" when approved now, else ""."""
    return [f"{by} · {when(at)}" if by else "" for by, at in zip(clusters["approved_by"], clusters["approved_at"])]


def status(session: ReviewSession, cluster: int) -> str:
    """One line on the cluster's sign-off: who approved it and when, or which edit withdrew the approval and why."""
    signs = session.state.sign_offs
    approval = signs.approved.get(cluster)
    if approval is not None:
        return f"Approved by {approval.stamp.user} on {when(approval.stamp.ts)} (#{approval.stamp.event_id})"
    withdrawal = signs.withdrawn.get(cluster)
    if withdrawal is None:
        return "Not approved"
    given, taken = withdrawal.approval.stamp, withdrawal.stamp
    return (f"Not approved: the approval by {given.user} (#{given.event_id}) was withdrawn by "
            f"{taken.user or UNKNOWN} on {when(taken.ts)} (#{taken.event_id}): {withdrawal.reason}")


def controls(workspace: Workspace, session: ReviewSession, cluster: int) -> None:
    """The open cluster's sign-off (Review page): its status, then Approve, or Withdraw with an optional reason."""
    st.caption(esc(status(session, cluster)))  # a caption, not st.text: names and reasons are user text, escaped
    run_id = session.run_id
    if cluster not in session.state.sign_offs.approved:
        refused = session.sign_off_refusal(cluster, "approve")
        st.button("Approve cluster", key="sign_off_approve", disabled=bool(refused),
                  on_click=actions.edit_and_redraw,
                  args=(workspace, run_id, "approve the cluster", lambda s: s.approve(cluster)),
                  help=access.help_text(refused, "Sign the cluster off as a class a model may be trained on. Any "
                                                 "later edit to it withdraws the approval."))
        return
    refused = session.sign_off_refusal(cluster, "withdraw")
    reason_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
    reason_col.text_input("Reason for withdrawing (optional)", key=REASON, max_chars=200, disabled=bool(refused))
    button_col.button("Withdraw approval", key="sign_off_withdraw", disabled=bool(refused), on_click=_withdraw,
                      args=(workspace, run_id, cluster), width="stretch", help=access.help_text(refused))


def _withdraw(workspace: Workspace, run_id: int, cluster: int) -> None:
    def run(session: ReviewSession):
        edit = session.withdraw(cluster, st.session_state.get(REASON, ""))
        st.session_state[REASON] = ""
        return edit
    actions.edit_and_redraw(workspace, run_id, "withdraw the approval", run)


def approvals_section(workspace: Workspace, session: ReviewSession) -> None:
    """Every cluster's sign-off (History page), and the two-person rule (admins switch it)."""
    st.subheader("Sign-off")
    refused = access.why_not(workspace, "settings")
    st.toggle("Two-person rule: the approver of a cluster must not be who made its last edit",
              value=two_person_rule(workspace), key=f"sign_off_rule_{workspace.path.name}", disabled=bool(refused),
              on_change=_switch_rule, args=(workspace,),
              help=access.help_text(refused, "A workspace setting; admins switch it. Approving needs the approver "
                                             "role either way."))
    table = approvals_table(session.state)
    sizes = session.clusters().set_index("cluster")["size"]
    st.caption(f"{int(table['approved'].sum())} of {len(table)} clusters approved. Approve a cluster on the Review "
               "page; any later edit to it withdraws the approval.")
    st.dataframe(pd.DataFrame({
        "ID": table["cluster"], "Name": table["name"], "Size": sizes.loc[table["cluster"]].to_numpy(),
        "Approved": table["approved"], "Approved by": table["approved_by"],
        "Approved at": table["approved_at"].map(when), "Approval": table["approval_event"].map(_event),
        "Withdrawn by": table["withdrawn_by"], "Withdrawn at": table["withdrawn_at"].map(when),
        "Withdrawn by event": table["withdrawn_event"].map(_event), "Why withdrawn": table["withdrawn_because"]}),
        hide_index=True, width="stretch", key="history_approvals",
        column_config={"Approved": st.column_config.CheckboxColumn("Approved"),
                       "Why withdrawn": st.column_config.TextColumn("Why withdrawn", width="large")})


def _event(event_id: int) -> str:
    return f"#{event_id}" if event_id >= 0 else ""


def _switch_rule(workspace: Workspace) -> None:
    value = "on" if st.session_state.get(f"sign_off_rule_{workspace.path.name}") else "off"
    if widgets.attempt(lambda: workspace.set_setting(TWO_PERSON_RULE, value), "change the two-person rule")[0]:
        widgets.flash("success", f"The two-person rule is {value} in this workspace.")
