"""Home page: what TAC Studio does, and the workspaces the user may see (list, create, open, claim, rename,
delete with confirmation), and the open workspace's members."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from tac_core.workspace.access import served_to_network
from tac_core.workspace.workspace import create_workspace, data_dir, delete_workspace, list_workspaces, rename_workspace
from ui import identity, members_view, navigation, state, widgets
from ui.safe_text import esc

_CONFIRM_KEY = "home_confirm_delete"


def render() -> None:
    st.title("TAC Studio")
    st.markdown(
        "Group a folder of unlabeled photos by **meaning** (crack, scratch, stain …) rather than by lighting or "
        "background, then review the groups, fix them and export verified labels. TAC Studio uses **TAC** "
        "(Text-Aided Clustering, ICML 2024): CLIP image embeddings are paired with text built from WordNet "
        "nouns and your own domain terms, and clustered together.")
    st.markdown("A **workspace** keeps one project: its images, vocabulary sets, runs, reviews and exports. "
                "Every decision is saved the moment you make it.")
    widgets.show_flashes()
    current = state.current_workspace()
    if current is not None:
        st.success(f"Open workspace: {esc(current.name)}")
        _steps()
    _workspaces(current)
    if current is not None:
        members_view.render(current)
    if served_to_network():
        return  # the server's folders are not the users' business
    st.divider()
    st.caption("Workspaces are stored in this folder on the machine running TAC Studio:")
    st.code(str(data_dir()), language=None)
    st.caption("Set the environment variable TAC_STUDIO_DATA to keep them somewhere else (e.g. a larger disk), "
               "then restart the app.")


def _steps() -> None:
    st.subheader("Steps")
    for page, what in navigation.STEPS:  # the step said in words beside its link, not in a tooltip over the next one
        link, text = st.columns([1, 4], vertical_alignment="center")
        with link:
            widgets.page_link(page, tooltip=False)
        text.caption(what)


def _workspaces(current) -> None:
    st.subheader("Workspaces")
    infos = list_workspaces(user=identity.user())  # only those this user may see
    if infos:
        frame = pd.DataFrame([{"name": i.name, "your role": i.role or "— (no members yet)", "images": i.image_count,
                               "runs": i.run_count, "created": i.created[:19].replace("T", " "),
                               "folder": i.path.name, "problem": i.error} for i in infos])
        if not frame["problem"].any():
            frame = frame.drop(columns="problem")
        st.dataframe(frame, hide_index=True, width="stretch")
    else:
        st.info("No workspaces yet: create one below.")

    with st.form("create_workspace", clear_on_submit=True):
        name = st.text_input("Workspace name", max_chars=100, placeholder="e.g. Line 3 solder joints, March")
        if st.form_submit_button("Create workspace", type="primary"):
            ok, workspace = widgets.attempt(lambda: create_workspace(name, creator=identity.user()),
                                            "create the workspace")
            if ok:
                state.set_workspace(workspace.path)
                widgets.flash("success", f"Created and opened workspace {workspace.name}.")
                st.rerun()
    if not infos:
        return

    by_path = {str(i.path): i for i in infos}
    paths = list(by_path)
    default = paths.index(str(current.path)) if current is not None and str(current.path) in by_path else 0
    chosen = st.selectbox("Workspace", paths, index=default, format_func=lambda p: _label(by_path[p]),
                          key="home_workspace")
    info = by_path[chosen]
    if info.error:
        st.error(f"This workspace cannot be opened: {esc(info.error)}. You can delete it.")
    elif not info.role:
        members_view.claim(info)
    admin = info.role == "admin" or bool(info.error)  # a broken one is listed only to whoever may delete it
    cols = st.columns(3)
    with cols[0]:
        if st.button("Open workspace", disabled=bool(info.error) or not info.role, width="stretch"):
            state.set_workspace(info.path)
            widgets.flash("success", f"Opened workspace {info.name}.")
            st.rerun()
    with cols[1]:
        new_name = st.text_input("New name", key="home_new_name", disabled=bool(info.error) or not admin)
        if st.button("Rename workspace", disabled=bool(info.error) or not admin, width="stretch",
                     help=None if admin else "Renaming needs the admin role of this workspace."):
            _rename(info, new_name, current)
    with cols[2]:
        if st.button("Delete workspace", width="stretch", disabled=not admin,
                     help=None if admin else "Deleting needs the admin role of this workspace."):
            st.session_state[_CONFIRM_KEY] = str(info.path)
    if st.session_state.get(_CONFIRM_KEY) == str(info.path):
        _confirm_delete(info)


def _label(info) -> str:
    return f"{info.name} — damaged" if info.error else f"{info.name} ({info.image_count} images, {info.run_count} runs)"


def _rename(info, new_name: str, current) -> None:
    ok, _ = widgets.attempt(lambda: rename_workspace(info.path, new_name, user=identity.user()),
                            "rename the workspace")
    if not ok:
        return
    was_open = current is not None and current.path == info.path
    state.forget_workspace(info.path)
    if was_open:
        state.set_workspace(info.path)
    widgets.flash("success", f"Renamed {info.name} to {new_name.strip()}.")
    st.session_state.pop("home_new_name", None)
    st.rerun()


def _confirm_delete(info) -> None:
    st.warning(f"Delete the workspace {esc(info.name)} with its copied images, vocabulary sets, runs, "
               "reviews and exports? Images added from a folder on this machine stay where they are. This cannot "
               "be undone.")
    cols = st.columns(2)
    if cols[0].button("Confirm delete", type="primary", width="stretch"):
        st.session_state.pop(_CONFIRM_KEY, None)
        ok, _ = widgets.attempt(lambda: _delete(info), "delete the workspace")
        if ok:
            widgets.flash("success", f"Deleted workspace {info.name}.")
            st.rerun()
    if cols[1].button("Keep it", width="stretch"):
        st.session_state.pop(_CONFIRM_KEY, None)
        st.rerun()


def _delete(info) -> None:
    state.forget_workspace(info.path)
    delete_workspace(info.path, user=identity.user())
    last = state.current_workspace()
    if last is not None and last.path == info.path:
        st.session_state.pop("workspace", None)
