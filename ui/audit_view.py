"""The Audit page: the images most likely to sit in the wrong cluster, one at a time, each with why it is
there, where it is, where it probably belongs, and one-click decisions.

Buttons keep a fixed order and keys: Keep (K), Move to suggested (S), Exclude (X), Skip (N), then
"Move to…" with Move to chosen (M); Undo (U) and Redo (Y). Shortcuts do not fire while typing in a field.
Keep records ``verify_images``, the moves ``move``, Exclude ``exclude``: one event each, applied before the
parts that show it are drawn. Skip is view state only (the image stays in the queue, after the others).

The page is drawn in parts (``st.fragment``): the toolbar, the queue (progress, the item, what comes next),
coverage per cluster, the contact sheet. A decision reruns the parts it changed (:func:`parts_for`); Skip
reruns the queue alone.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from tac_core.errors import TacError
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.review_audit import AuditQueue
from tac_core.workspace.workspace import Workspace
from ui import review_actions as actions
from ui import possible_merges, review_parts, widgets
from ui.audit_data import name_reasons, snapshot
from ui.audit_extras import contact_sheet_section, coverage_section, recluster_section
from ui.gallery import show_image, strip
from ui.review_batches import state_paths
from ui.review_data import part_session, pick_run, review_session
from ui.review_view import toolbar
from ui.safe_text import short
from ui.state import require_workspace, show_error

UPCOMING = 15
GOAL = 0.05  # the top 5 % of the queue: where the audit's precision was measured (bench/audit.py)
MOVE_TO = "audit_move_to"
TOOLBAR, QUEUE, COVERAGE, SHEET = "audit_toolbar", "audit_queue", "audit_coverage_part", "audit_sheet"
MERGES = "audit_merges_part"
SHEET_DEPENDS_ON = frozenset({"labels", "names", "excluded"})


def parts_for(changes) -> list[str]:
    """The parts to rerun after an edit that changed ``changes``: the toolbar, the queue and coverage always
    (every edit can decide images or rename clusters), the possible merges and the contact sheet when members
    or names changed."""
    return [TOOLBAR, QUEUE, COVERAGE, *([MERGES, SHEET] if SHEET_DEPENDS_ON & frozenset(changes) else [])]


def render() -> None:
    st.title("Audit")
    workspace = require_workspace()
    widgets.sidebar_status(workspace)
    run_id = pick_run(workspace, key="audit_run")
    if run_id is None:
        st.info("There is no finished run to audit yet: cluster the images first.")
        return
    try:
        session = review_session(workspace, run_id)
    except TacError as exc:
        show_error(exc, f"open run {run_id} for the audit")
        return
    toolbar(workspace, run_id, prefix="audit", parts_for=parts_for)
    queue_part(workspace, run_id)
    merges_part(workspace, run_id)
    recluster_section(workspace, session)
    coverage_part(workspace, run_id)
    sheet_part(workspace, run_id)


def scored(workspace: Workspace, session: ReviewSession):
    """The queue snapshot (``ui.audit_data.snapshot``), the decided mask and a note; None for a run the audit
    cannot score (the note says why, or the error was shown)."""
    decided = session.decided()
    force = st.session_state.pop("audit_rescore", False)
    try:
        snap, note = snapshot(workspace, session, decided, force=force)
    except TacError as exc:
        show_error(exc, "score the images for the audit")
        return None, decided, ""
    return snap, decided, note


@st.fragment(key=QUEUE)
def queue_part(workspace: Workspace, run_id: int) -> None:
    session = part_session(workspace, run_id)
    snap, decided, note = scored(workspace, session)
    if snap is None:
        if note:
            st.warning(note)
        return
    queue_section(workspace, session, snap, decided, note)


@st.fragment(key=COVERAGE)
def coverage_part(workspace: Workspace, run_id: int) -> None:
    session = part_session(workspace, run_id)
    snap, decided, _ = scored(workspace, session)
    coverage_section(session, snap, decided)


@st.fragment(key=MERGES)
def merges_part(workspace: Workspace, run_id: int) -> None:
    possible_merges.render(workspace, part_session(workspace, run_id), parts_for)


@st.fragment(key=SHEET)
def sheet_part(workspace: Workspace, run_id: int) -> None:
    contact_sheet_section(workspace, part_session(workspace, run_id))


def _skipped_key(run_id: int) -> str:
    return f"audit_skipped_{run_id}"


def _skip(run_id: int, position: int) -> None:
    skipped = st.session_state.setdefault(_skipped_key(run_id), [])
    skipped.append(int(position))
    review_parts.redraw(QUEUE)


def _keep(workspace, run_id, image_id):
    actions.edit_and_redraw(workspace, run_id, "keep the image", lambda s: s.verify_images([image_id]), parts_for)


def _move(workspace, run_id, image_id, target):
    actions.edit_and_redraw(workspace, run_id, "move the image",
                            lambda s: s.move([image_id], st.session_state.get(MOVE_TO) if target is None else target,
                                             verify=True), parts_for)


def _exclude(workspace, run_id, image_id):
    actions.edit_and_redraw(workspace, run_id, "exclude the image", lambda s: s.exclude([image_id]), parts_for)


def _rescore() -> None:
    st.session_state["audit_rescore"] = True
    review_parts.redraw(QUEUE, COVERAGE)


def queue_section(workspace: Workspace, session: ReviewSession, snap, decided: np.ndarray, note: str) -> None:
    run_id = session.run_id
    paths = state_paths(workspace, session)
    queue = snap.audit.queue
    done, total = snap.audit.progress(decided)
    goal = queue[: max(1, int(round(GOAL * len(queue))))] if len(queue) else queue
    st.subheader("Audit queue")
    st.progress(done / total if total else 1.0, text=f"{done} of {total} reviewed")
    st.text(f"Top {GOAL:.0%} of the queue: {int(decided[goal].sum())} of {len(goal)} reviewed.  "
            f"Scores: {snap.audit.mode} mode.")
    top = st.columns([5, 1], vertical_alignment="center")
    if note:
        top[0].text(note)
    top[1].button("Rescore queue", key="audit_rescore_button", width="stretch", on_click=_rescore)
    skipped = np.asarray(st.session_state.get(_skipped_key(run_id), []), np.int64)
    pending = snap.audit.pending(decided)
    if skipped.size:  # skipped images go to the end, in the order they were skipped
        later = np.isin(pending, skipped)
        pending = np.concatenate([pending[~later], [p for p in skipped.tolist() if p in set(pending[later].tolist())]])
        pending = pending.astype(np.int64)
    if pending.size == 0:
        st.success("Every image in the queue has been reviewed.")
        return
    current_item(workspace, session, snap.audit, int(pending[0]), paths)
    upcoming(session, snap.audit, pending[1:UPCOMING + 1], paths)


def current_item(workspace: Workspace, session: ReviewSession, audit: AuditQueue, pos: int, paths: pd.DataFrame
                 ) -> None:
    run_id, state = session.run_id, session.state
    image_id = int(state.image_ids[pos])
    own = int(state.labels[pos])
    suggested = int(audit.suggested[pos])
    can_suggest = suggested in state.names and suggested != own
    row = paths.iloc[pos]
    st.text(f"#{int(audit.rank[pos]) + 1} in the queue · image {image_id} · {row['rel_path']}")
    if pos >= state.n_run:  # added by an intake: the queue puts these first when they need a person
        st.caption(f"New image, added after the run (novelty {state.novelty[pos]:.1f})"
                   + (": unlike every cluster, possibly a new defect." if own == state.bucket else "."))
    picture, why = st.columns([2, 3], gap="medium")
    with picture:
        show_image(workspace, row["sha256"], row["path"])
    with why:
        st.markdown("**Why it is here**")
        st.text(name_reasons(audit.reasons[pos], session, paths["rel_path"]))
        st.text(f"Suspicion {audit.score[pos]:.2f} · confidence in its cluster {audit.confidence[pos]:.2f}")
        st.markdown("**In cluster**")
        st.text(f"{own} · {state.names[own]}")
        _examples(workspace, session, own, exclude=image_id)
        st.markdown("**Suggested cluster**")
        st.text(f"{suggested} · {state.names[suggested]}" if can_suggest else "No other cluster suggested.")
        if can_suggest:
            _examples(workspace, session, suggested, exclude=image_id)
    locked = bool(session.refusal("edit"))  # the toolbar above says why
    cols = st.columns(4, vertical_alignment="bottom")
    cols[0].button("Keep", key="audit_keep", shortcut="K", type="primary", width="stretch", disabled=locked,
                   on_click=_keep, args=(workspace, run_id, image_id),
                   help="It belongs where it is: mark it verified in its cluster.")
    cols[1].button("Move to suggested", key="audit_move_suggested", shortcut="S", width="stretch",
                   disabled=not can_suggest or locked, on_click=_move, args=(workspace, run_id, image_id, suggested))
    cols[2].button("Exclude", key="audit_exclude", shortcut="X", width="stretch", disabled=locked,
                   on_click=_exclude, args=(workspace, run_id, image_id),
                   help="Not a usable image (wrong part, blurred, ...): leave it out of every cluster and export.")
    cols[3].button("Skip", key="audit_skip", shortcut="N", width="stretch", on_click=_skip, args=(run_id, pos),
                   help="Decide later: it goes to the end of the queue. Nothing is recorded.")
    others = [c for c in sorted(state.names) if c != own]
    if st.session_state.get("audit_move_for") != image_id or st.session_state.get(MOVE_TO) not in others:
        st.session_state["audit_move_for"] = image_id  # a new item: "Move to…" starts at its suggestion
        st.session_state[MOVE_TO] = suggested if can_suggest else (others[0] if others else None)
    choose, move = st.columns([3, 1], vertical_alignment="bottom")
    choose.selectbox("Move to…", others, key=MOVE_TO,
                     format_func=lambda c: short(f"{c} · {state.names.get(c, '?')}", 60))
    move.button("Move to chosen", key="audit_move", shortcut="M", width="stretch", disabled=not others or locked,
                on_click=_move, args=(workspace, run_id, image_id, None))


def _examples(workspace: Workspace, session: ReviewSession, cluster: int, exclude: int) -> None:
    """The cluster's four most confident images (not excluded, not the image in question)."""
    state, positions = session.state, session.member_positions(cluster)
    positions = positions[(state.image_ids[positions] != exclude) & ~state.excluded[positions]]
    strip(workspace, session.images(positions[:4]), columns=4)


def upcoming(session: ReviewSession, audit: AuditQueue, positions: np.ndarray, paths: pd.DataFrame) -> None:
    """The next images in the queue, in rank order, with their reasons."""
    if positions.size == 0:
        return
    state = session.state
    rel = paths["rel_path"]  # a few rows of it: converting all 20,000 Arrow strings would cost more than the rest
    names = state.names
    st.markdown("**Next in the queue**")
    st.dataframe(pd.DataFrame({
        "Rank": audit.rank[positions] + 1, "Image": rel.iloc[positions].to_numpy(),
        "Cluster": [names.get(int(c), "?") for c in state.labels[positions]],
        "Suggested": [names.get(int(c), "—") for c in audit.suggested[positions]],
        "Suspicion": audit.score[positions],
        "Why": [name_reasons(audit.reasons[p], session, rel) for p in positions]}),
        hide_index=True, key="audit_upcoming",
        column_config={"Suspicion": st.column_config.NumberColumn(format="%.2f")})

