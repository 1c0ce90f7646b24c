"""The Audit page's possible merges: pairs of clusters that look like one group cut in two
(:mod:`tac_core.workspace.review_merges`), each with its evidence — centroid similarity, shared anchors, typical
images of both sides — and a one-click merge. The merge is the review's own action (one ``merge`` event,
undoable, refused to a user who may not edit), the smaller cluster into the larger.

The pairs are computed for the clusters as they are now and kept in the browser session while the clusters
stay nearly the same (:func:`current_merges`); example images that have left their cluster since are not shown.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from tac_core.cluster.balance import MERGE_RATIO
from tac_core.cluster.merges import MIN_SHARED, SHARED_ANCHOR_RATIO, TOP_ANCHORS
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.review_merges import MergeSuggestion, review_merges
from tac_core.workspace.workspace import Workspace
from ui import access
from ui import review_actions as actions
from ui.audit_data import session_features
from ui.gallery import strip

LISTED = 8
STORE = "audit_possible_merges"
REUSE_SHARE = 0.01
EXAMPLES = 4
RULE = (f"Listed: two clusters whose centres are at most {MERGE_RATIO:g}× as far apart as clusters of this run "
        f"typically are (the median over all pairs), or at most {SHARED_ANCHOR_RATIO:g}× when they share "
        f"{MIN_SHARED} or more of their top {TOP_ANCHORS} text anchors. On test sets with one large class, every "
        "pair listed was two pieces of one class; on balanced ones none was listed.")


def current_merges(workspace: Workspace, session: ReviewSession, features: np.ndarray) -> list[MergeSuggestion]:
    """The session's possible merges, recomputed only when the set of clusters changed or more than
    :data:`REUSE_SHARE` of the labels did (a move or two on the audit queue hardly moves a centroid; at 50k
    images a computation takes about a second)."""
    labels, clusters = session.state.included_labels(), tuple(sorted(session.state.names))
    store: dict = st.session_state.setdefault(STORE, {})
    key = (str(workspace.path), session.run_id)
    old = store.get(key)
    if old is not None and old[1] == clusters and np.count_nonzero(old[0] != labels) <= REUSE_SHARE * len(labels):
        return old[2]
    merges = review_merges(session.state, features)
    store[key] = (labels, clusters, merges)
    return merges


def _merge(workspace: Workspace, run_id: int, source: int, target: int, parts_for: actions.PartsFor) -> None:
    actions.edit_and_redraw(workspace, run_id, "merge the clusters", lambda s: s.merge([source], target), parts_for)


def render(workspace: Workspace, session: ReviewSession, parts_for: actions.PartsFor) -> None:
    """The listed pairs, closest first, each with its evidence and a Merge button (which reruns the page's
    ``parts_for`` the merge's changes)."""
    run_id, state = session.run_id, session.state
    st.subheader("Possible merges")
    features = session_features(workspace, session)
    if features is None:
        st.text("This run has no saved embeddings, so no merge suggestions.")
        return
    labels = state.included_labels()
    merges = current_merges(workspace, session, features)
    st.caption(RULE)
    if not merges:
        st.text("No two clusters look like one group cut in two.")
        return
    refused = session.refusal("edit")
    sizes = dict(zip(*np.unique(labels[labels >= 0], return_counts=True)))
    shown = merges[:LISTED]
    if len(merges) > LISTED and st.toggle(f"Show all {len(merges)} pairs (the closest {LISTED} are shown)",
                                          key="audit_possible_merges_all"):
        shown = merges
    for merge in shown:
        with st.container(border=True):
            evidence, names = merge.evidence, state.names
            st.text(f"{merge.source} · {names[merge.source]} ({sizes.get(merge.source, 0)} images)  →  "
                    f"{merge.target} · {names[merge.target]} ({sizes.get(merge.target, 0)} images)")
            shared = ", ".join(merge.shared_terms) if merge.shared_terms else "none"
            st.text(f"Centroid similarity {evidence.centroid_similarity:.2f} ({evidence.relative_distance:.2f}× the "
                    f"typical distance between clusters) · shared top anchors: {shared}")
            sides = {c: [p for p in side if labels[p] == c] for c, side in zip(evidence.clusters, evidence.examples)}
            for cluster, column in zip((merge.source, merge.target), st.columns(2, gap="medium")):
                with column:
                    st.text(f"Typical images of {cluster} · {names[cluster]}")
                    strip(workspace, session.images(sides[cluster][:EXAMPLES]), columns=EXAMPLES)
            st.button(f"Merge cluster {merge.source} into cluster {merge.target}",
                      key=f"audit_possible_merge_{merge.source}_{merge.target}", on_click=_merge,
                      args=(workspace, run_id, merge.source, merge.target, parts_for), disabled=bool(refused),
                      help=access.help_text(refused, "One merge event: Undo takes it back."))
