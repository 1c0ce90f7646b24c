"""The Review page's parts and view state: which part redraws after what, the open cluster, the selection.

The page is drawn in parts, each an ``st.fragment`` with a key: the toolbar (undo, redo, what happened, the
history), the map, the cluster list with the open cluster's actions, the open cluster's gallery, the
selection with its actions, and the selection's gallery. An input inside a part reruns only that part; an action's callback
names the parts to rerun from what the edit changed (:func:`tac_core.workspace.review_state.effects`), so a
verified mark never redraws the map and a rename never rebuilds a gallery.

View state (not decisions, kept in ``st.session_state``): the open cluster (:data:`CLUSTER`) and the selected
image ids (:func:`selected_ids`), which the map, the galleries and the buttons share.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import streamlit as st

TOOLBAR = "review_toolbar"
MAP = "review_map_part"
CLUSTERS = "review_clusters"
MEMBERS = "review_members_part"
SELECTION = "review_selection_part"  # what is selected and the actions on it
SELECTED = "review_selected_part"  # the selection's gallery
ALL = (TOOLBAR, MAP, CLUSTERS, MEMBERS, SELECTION, SELECTED)
SELECTION_PARTS = (MEMBERS, SELECTION, SELECTED)  # what a change of the selection redraws (checkboxes, actions)
CLUSTER = "review_cluster"  # the open cluster (the "Cluster" select box's key)
MAP_DEPENDS_ON = frozenset({"labels", "names", "excluded"})
#: what each part shows besides the toolbar, which every action redraws (undo, redo, the outcome)
SHOWS = {MAP: MAP_DEPENDS_ON,
         CLUSTERS: frozenset({"labels", "names", "marks", "verified", "excluded", "approvals"}),
         MEMBERS: frozenset({"labels", "verified", "excluded"}),
         SELECTION: frozenset({"labels", "names", "verified", "excluded"}),
         SELECTED: frozenset({"verified", "excluded"})}


def parts_for(changes: Iterable[str]) -> list[str]:
    """The parts to redraw after an edit that changed ``changes`` (the toolbar always)."""
    changes = frozenset(changes)
    return [TOOLBAR, *(part for part, shown in SHOWS.items() if shown & changes)]


def redraw(*parts: str) -> None:
    """From a widget callback, as its last statement: rerun only ``parts`` after it."""
    st.rerun(list(dict.fromkeys(parts)))


# -- the selection ------------------------------------------------------------------------------------------
def selection_key(run_id: int) -> str:
    return f"review_selection_{int(run_id)}"


def selected_ids(run_id: int) -> np.ndarray:
    """The selected image ids (sorted, unique)."""
    return np.unique(np.asarray(st.session_state.get(selection_key(run_id), []), dtype=np.int64))


def set_selection(run_id: int, image_ids) -> None:
    st.session_state[selection_key(run_id)] = np.unique(np.asarray(image_ids, dtype=np.int64)).tolist()
