"""The Review page's new batches: sorting the images added after the run into it, and turning unsorted images
into a cluster. The engine does both (:mod:`tac_core.run.intake`, :mod:`tac_core.workspace.intake`): each is
one event of the review log, undone with Undo like any edit. Both load torch (and the intake open_clip): they are
imported when used, so the Review page opens without them."""
from __future__ import annotations

from typing import Optional

import numpy as np
import streamlit as st

from tac_core.workspace.review import Edit, ReviewSession
from tac_core.workspace.workspace import Workspace
from ui import access, widgets
from ui.safe_text import esc


def pending_count(workspace: Workspace, session: ReviewSession) -> int:
    """How many usable images of the workspace the review does not hold (the review only ever holds usable ones)."""
    return max(0, workspace.image_counts()["ok"] - len(session.state.image_ids))


def intake_bar(workspace: Workspace, session: ReviewSession) -> Optional[str]:
    """When images were added after the run: say so, with a button that sorts them in (embedding them first,
    with a progress bar). Returns what the intake did when it recorded one (the caller says so and redraws the
    whole page), else None."""
    state, pending = session.state, pending_count(workspace, session)
    if state.batches:
        novel = int((state.labels[state.n_run:] == state.bucket).sum()) if state.bucket is not None else 0
        st.caption(f"{len(state.labels) - state.n_run:,} image(s) of this review were added after the run "
                   f"({len(state.batches)} batch(es)); {novel:,} of them wait in the unsorted cluster.")
    if pending == 0:
        return None
    text, button = st.columns([4, 1.4], vertical_alignment="center")
    text.info(f"{pending:,} image(s) were added to the workspace after this run. Sort them into its reviewed "
              "clusters: they are placed on the map and marked new, and images unlike every cluster wait in "
              "\u201cunsorted: possibly new defect\u201d. It is one edit: Undo takes the whole batch out again.")
    reason = access.why_not(workspace, "edit")
    if not button.button(f"Sort {pending:,} new image(s) into this run", key="review_intake", type="primary",
                         disabled=bool(reason), help=access.help_text(reason), width="stretch"):
        return None
    from tac_core.run.intake import intake_new_images

    bar = widgets.ProgressBar()
    ok, result = widgets.attempt(lambda: intake_new_images(session, progress=bar), "sort the new images in")
    bar.clear()
    return result.edit.text[:1].upper() + result.edit.text[1:] + "." if ok else None


def unsorted_selection(session: ReviewSession, ids: np.ndarray) -> np.ndarray:
    """The selected ids that wait in the unsorted cluster."""
    state = session.state
    if state.bucket not in state.names or ids.size == 0:
        return np.zeros(0, np.int64)
    ids = ids[np.isin(ids, state.image_ids)]
    return ids[state.labels[state.positions(ids)] == state.bucket]


def new_cluster_from_unsorted(session: ReviewSession, ids: np.ndarray, arrays) -> Edit:
    """One ``split`` event: the unsorted images become a cluster named after their own best anchor."""
    from tac_core.workspace.intake import split_unsorted

    return split_unsorted(session, unsorted_selection(session, ids), arrays)


def unsorted_help(count: int) -> str:
    return esc(f"The {count} selected unsorted image(s) become a new cluster, named after the term that fits them "
               "best (rename it if it does not).")
