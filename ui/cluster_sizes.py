"""The Review page's cluster sizes: one bar per cluster, largest first, with its size written on it, and the
run's size verdict (:mod:`tac_core.run.run_sizes`) — a warning with what to do when the sizes look forced.

The verdict is the engine's, computed once per run (by the job, or here on the first view of an older run)
and saved beside the run; this module caches it per server process and only draws.
"""
from __future__ import annotations

from typing import Optional

import altair as alt
import pandas as pd
import streamlit as st

from tac_core.cluster.balance import SizeCheck
from tac_core.errors import TacError
from tac_core.run.run_sizes import run_size_check
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import Workspace
from ui.cluster_view import BALANCE_LABELS
from ui.safe_text import esc
from ui.state import show_error

CHART_HEIGHT = 240
ROTATE_ABOVE = 20  # more clusters than this: the sizes are written upwards, so that neighbours do not overlap
ADVICE = (f"In the app: on the Cluster page choose Cluster sizes '{BALANCE_LABELS['estimated']}' and run again, "
          "or merge the pieces of one group listed under Possible merges on the Audit page.")


@st.cache_resource(show_spinner=False, max_entries=32)
def _size_check(workspace_path: str, run_id: int, _workspace: Workspace) -> Optional[SizeCheck]:
    return run_size_check(_workspace, run_id)


def render(workspace: Workspace, session: ReviewSession, clusters: pd.DataFrame) -> None:
    """The size chart of the clusters as they are now, and the run's verdict."""
    st.subheader("Cluster sizes")
    try:
        with st.spinner("Checking this run's cluster sizes (once per run)…"):
            check = _size_check(str(workspace.path), session.run_id, workspace)
    except TacError as exc:
        show_error(exc, "check the cluster sizes")
        check = None
    if check is not None and check.forced:
        since = " (The verdict is about the run as clustered; the chart shows the clusters as reviewed now.)"
        st.warning(esc(f"{check.reason} {ADVICE}" + (since if session.state.labels_edited() else "")),
                   icon=":material/balance:")
    st.altair_chart(size_chart(clusters), key=f"review_sizes_{session.run_id}")
    sizes = clusters["size"].sort_values(ascending=False)
    total = max(1, int(sizes.sum()))
    st.text(f"{len(sizes)} clusters · largest {int(sizes.iloc[0])} ({sizes.iloc[0] / total:.0%}) · smallest "
            f"{int(sizes.iloc[-1])} ({sizes.iloc[-1] / total:.1%}) · median {int(sizes.median())}")
    if check is not None and not check.forced:
        st.caption(esc(check.reason))


def size_chart(clusters: pd.DataFrame) -> alt.LayerChart:
    """Bars largest first, each labelled with its size; cluster ids below, names and shares on hover."""
    frame = clusters[["cluster", "name", "size"]].sort_values(["size", "cluster"], ascending=[False, True])
    frame = frame.assign(label=frame["cluster"].astype(str),
                         share=frame["size"] / max(1, int(frame["size"].sum())))
    many = len(frame) > ROTATE_ABOVE
    base = alt.Chart(frame).encode(
        x=alt.X("label:N", sort=None, title="Cluster (largest first)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("size:Q", title="Images", scale=alt.Scale(domainMax=float(frame["size"].max()) * (1.3 if many else 1.15))),
        tooltip=[alt.Tooltip("label:N", title="Cluster"), alt.Tooltip("name:N", title="Name"),
                 alt.Tooltip("size:Q", title="Images"), alt.Tooltip("share:Q", title="Share", format=".1%")])
    bars = base.mark_bar()
    text = base.mark_text(fontSize=10, **({"angle": 270, "align": "left", "baseline": "middle", "dx": 3} if many else
                                           {"baseline": "bottom", "dy": -2})).encode(text="size:Q")
    return (bars + text).properties(height=CHART_HEIGHT)
