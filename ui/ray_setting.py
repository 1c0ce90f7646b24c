"""The workspace's Ray cluster on the Cluster page: where its runs embed images and vocabulary (README,
"Scaling out"). Saved in the workspace the moment it is changed."""
from __future__ import annotations

import importlib.util

import streamlit as st

from tac_core.embedding.ray_cluster import INSTALL_HINT, ray_options
from ui import access, widgets

KEY = "ray_address"


def ray_address_input(workspace) -> None:
    saved = workspace.setting(KEY)
    refused = access.why_not(workspace, "settings")  # it decides where the images are sent: admins only
    text = st.text_input("Embed on a Ray cluster (optional)", value=saved, key=f"w_ray_{workspace.path.name}",
                         placeholder="empty: on this computer", disabled=bool(refused),
                         help=access.help_text(refused, "'auto' (the cluster this computer joined with `ray start`), "
                                               "HOST:6379, or 'local'. Images must be at the same path on every "
                                               "machine; vectors land in this workspace's cache either way."))
    if text.strip() != saved and widgets.attempt(lambda: ray_options(text), "use this Ray address")[0] and \
            widgets.attempt(lambda: workspace.set_setting(KEY, text), "save the Ray address")[0]:
        where = f"on Ray at {widgets.esc(text.strip())}" if text.strip() else "here"
        st.caption(f"Saved: the next runs embed {where}.")
    if text.strip() and importlib.util.find_spec("ray") is None:
        st.warning(f"Ray is not installed on this computer; {INSTALL_HINT}.")
