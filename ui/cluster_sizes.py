"""The Review page's cluster sizes: one bar per cluster, largest first, with its size written on it, and the
run's size verdict (:mod:`tac_core.run.run_sizes`) — a warning with what to do when the sizes look forced.

The verdict is the engine's, computed once per run and saved beside the run: by the run's job, or — for a run
made before, or re-clustered — in a background thread on its first view here, so the page is never held up.
"""
from __future__ import annotations

import logging
import threading
from typing import Optional

import pandas as pd
import streamlit as st

from tac_core.cluster.sizes import SizeCheck
from tac_core.errors import TacError
from tac_core.run.run_sizes import load_size_check, run_size_check
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import Workspace
from ui.run_choices import BALANCE_LABELS
from ui.safe_text import esc
from ui.size_bars import size_bars

LOG = logging.getLogger("tac_studio")
WAIT_S = 1.0  # a small run's verdict is waited for, so it shows on the first view ...
WAIT_UP_TO = 5_000  # ... up to this many images (a bigger one's takes longer: the page does not wait)
CHECKING = ("Checking whether this run's sizes look forced (once per run, in the background); the answer shows "
            "on the page's next update.")
ADVICE = (f"In the app: on the Cluster page choose Cluster sizes '{BALANCE_LABELS['estimated']}' and run again, "
          "or merge the pieces of one group listed under Possible merges on the Audit page.")


@st.cache_resource(show_spinner=False, max_entries=64)
def _check_in_background(workspace_path: str, run_id: int, _workspace: Workspace) -> dict:
    """Compute the run's verdict once per server process, in a thread (a trained run of 50k images takes about
    a minute on two cores); the returned dict gets ``error`` when it failed, ``thread`` is the worker."""
    job: dict = {"error": ""}

    def work() -> None:
        try:
            run_size_check(_workspace, run_id)
        except TacError as exc:
            job["error"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - the chart stays; say why in the server log
            LOG.exception("could not check the cluster sizes of run %s in %s", run_id, workspace_path)
            job["error"] = f"an unexpected problem ({type(exc).__name__}); the details are in the server log"

    job["thread"] = threading.Thread(target=work, name=f"size-check-run-{run_id}", daemon=True)
    job["thread"].start()
    return job


def size_check(workspace: Workspace, run_id: int, n_images: int) -> tuple[Optional[SizeCheck], str]:
    """The run's saved verdict, or (None, a note) while it is computed in the background or when it failed;
    a small run's is waited for (up to :data:`WAIT_S`)."""
    check = load_size_check(workspace, run_id)
    if check is None:
        job = _check_in_background(str(workspace.path), run_id, workspace)
        job["thread"].join(WAIT_S if n_images <= WAIT_UP_TO else 0.0)
        check = load_size_check(workspace, run_id)
        if check is None and job["error"]:
            return None, f"Could not check whether the sizes look forced: {job['error']}"
        if check is None and job["thread"].is_alive():
            return None, CHECKING
    return check, ""


def render(workspace: Workspace, session: ReviewSession, clusters: pd.DataFrame) -> None:
    """The size chart of the clusters as they are now, and the run's verdict."""
    st.subheader("Cluster sizes")
    check, note = size_check(workspace, session.run_id, int(clusters["size"].sum()))
    if check is not None and check.forced:
        since = " (The verdict is about the run as clustered; the chart shows the clusters as reviewed now.)"
        st.warning(esc(f"{check.reason} {ADVICE}" + (since if session.state.labels_edited() else "")),
                   icon=":material/balance:")
    size_bars(clusters, key=f"review_sizes_{session.run_id}")
    sizes = clusters["size"].sort_values(ascending=False)
    total = max(1, int(sizes.sum()))
    summary = (f"{len(sizes)} clusters · largest {int(sizes.iloc[0])} ({sizes.iloc[0] / total:.0%}) · smallest "
               f"{int(sizes.iloc[-1])} ({sizes.iloc[-1] / total:.1%}) · median {int(sizes.median())}.")
    verdict = check.reason if check is not None and not check.forced else note
    st.caption(esc(f"{summary} {verdict}" if verdict else summary))
