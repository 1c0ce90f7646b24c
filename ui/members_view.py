"""The open workspace's members on the home page (admins add, change and remove them by user name), and
claiming a workspace that has no members yet (``tac_core.workspace.access``: unclaimed workspaces)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from tac_core.workspace.access import Role
from tac_core.workspace.workspace import Workspace
from ui import access, state, widgets
from ui.safe_text import esc

ROLE_HELP = ("viewer: sees and exports · reviewer: also adds images by upload, edits vocabularies, starts runs, "
             "reviews and audits · approver: also signs off clusters and undoes others' edits · admin: also "
             "manages members, adds server folders, renames and deletes")


def render(workspace: Workspace) -> None:
    st.subheader("Members")
    members = workspace.members()
    if members.empty:
        st.info("This workspace has no members yet (an older TAC Studio made it). On this machine everyone acts as "
                "its admin until it is claimed.")
        if st.button("Make me its admin", key="members_claim_open"):
            if widgets.attempt(lambda: workspace.claim(), "claim the workspace")[0]:
                widgets.flash("success", "You are now the admin of this workspace.")
                st.rerun()
        return
    st.dataframe(pd.DataFrame({"user": members["name"], "e-mail": members["email"], "role": members["role"],
                               "added by": members["added_by"], "added": members["added"].str[:19].str.replace(
                                   "T", " ")}), hide_index=True, width="stretch", key="members_table")
    reason = access.why_not(workspace, "members")
    if reason:
        st.caption(esc(f"Only admins change members ({ROLE_HELP})."))
        return
    with st.form("members_add", clear_on_submit=True):
        cols = st.columns([3, 3, 2])
        name = cols[0].text_input("User name", max_chars=200, help="Exactly as the sign-in gives it (letter case "
                                                                   "does not matter).")
        email = cols[1].text_input("E-mail (optional)", max_chars=254)
        role = cols[2].selectbox("Role", [r.label for r in Role], index=1, help=esc(ROLE_HELP))
        if st.form_submit_button("Add member or change role"):
            if widgets.attempt(lambda: workspace.add_member(name, role, email), "add the member")[0]:
                widgets.flash("success", f"{name.strip()} is a {role} of this workspace now.")
                st.rerun()
    cols = st.columns([3, 2], vertical_alignment="bottom")
    leaving = cols[0].selectbox("Member to remove", members["name"].tolist(), index=None, key="members_remove_pick")
    if cols[1].button("Remove member", disabled=leaving is None, width="stretch"):
        if widgets.attempt(lambda: workspace.remove_member(leaving), "remove the member")[0]:
            widgets.flash("success", f"Removed {leaving} from this workspace.")
            st.rerun()


def claim(info) -> None:
    """An unclaimed workspace listed to a server admin: they may claim it (become its admin)."""
    st.warning("This workspace has no members yet (an older TAC Studio made it), so nobody may open it. As a server "
               "admin you may claim it: you become its admin and can add members.")
    if st.button("Claim workspace", type="primary", key="members_claim"):
        if widgets.attempt(lambda: state.claim(info.path), "claim the workspace")[0]:
            state.set_workspace(info.path)
            widgets.flash("success", f"You are now the admin of {info.name}.")
            st.rerun()
