"""Server time of the Review page (and optionally the Audit page) at 50,000 images: ``python -m bench.review_page``.

Builds a synthetic workspace (50k fake image records sharing one real thumbnail, 100 clusters, embeddings,
counterparts and a 2-D layout), opens the Review page (``pages/review.py``) in Streamlit's AppTest and times
``at.run()`` after each action: the whole rerun on the server — the callback that records the event (SQLite
commit with fsync), the page script, the map's payload and AppTest's own parsing of the messages (which a real
server does not do, so these are upper bounds). Selection change is timed by putting 5,000 image ids into the
selection (what the map's lasso callback does). With ``--audit`` the Audit page is timed too (its first scoring
is O(n²) and slow).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from review_workspace import synthetic_workspace  # noqa: E402


def timed(at, reps: int, prepare) -> list[float]:
    times = []
    for i in range(reps):
        prepare(at, i)
        started = time.perf_counter()
        at.run()
        times.append((time.perf_counter() - started) * 1000)
        if at.exception:
            raise RuntimeError(at.exception[0].value)
        if at.error:
            raise RuntimeError(at.error[0].value)
    return times


def press(key: str):
    def prepare(at, i):
        at.button(key=key).click()
    return prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--dim", type=int, default=64, help="embedding width (512 for ViT-B/32; only the audit "
                                                           "and the automatic split depend on it)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--audit", action="store_true", help="also time the Audit page")
    args = parser.parse_args()
    from streamlit.testing.v1 import AppTest

    from apptest_helpers import map_payload

    with tempfile.TemporaryDirectory(prefix="tac-page-bench-") as root:
        os.environ["TAC_STUDIO_DATA"] = root
        started = time.perf_counter()
        workspace, run_id = synthetic_workspace(Path(root), args.images, args.clusters, dim=args.dim)
        print(f"built {args.images:,} images, {args.clusters} clusters in {time.perf_counter() - started:.1f} s")
        ids = workspace.run_image_ids(run_id)
        rng = np.random.default_rng(0)
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600).switch_page("pages/review.py")
        at.session_state["workspace"] = str(workspace.path)
        at.session_state["run_id"] = run_id
        rows = {"first render (loads arrays)": timed(at, 1, lambda at, i: None),
                "rerun, nothing changed": timed(at, args.reps, lambda at, i: None)}
        payload = map_payload(at)
        print(f"map: {payload.header['n']:,} points drawn, {len(payload.header['groups'])} groups, "
              f"{(sum(a.nbytes for a in payload.arrays.values()) + len(''.join(payload.hover))) / 1e3:,.0f} kB "
              "of points and hover text in its payload")

        def rename(at, i):
            at.text_input(key="review_new_name").input(f"defect {i}")
            at.button(key="review_rename").click()
        rows["rename"] = timed(at, args.reps, rename)

        def merge(at, i):
            at.run()  # the whole page first: the parts a rename reran leave AppTest's copy of the select box stale
            sources = at.multiselect(key="review_merge_sources")
            sources.select(int(sources.options[-1].split(" · ")[0]))  # the last cluster other than the open one
            at.button(key="review_merge").click()
        rows["merge"] = timed(at, args.reps, merge)

        def select(at, i):
            at.session_state[f"review_selection_{run_id}"] = rng.choice(ids, 5000, replace=False).tolist()
        rows["selection change (5,000 images)"] = timed(at, args.reps, select)

        def move(at, i):
            at.session_state[f"review_selection_{run_id}"] = rng.choice(ids, 5000, replace=False).tolist()
            at.run()
            at.button(key="review_move").click()
        rows["move 5,000 selected"] = timed(at, args.reps, move)
        rows["undo"] = timed(at, args.reps, press("review_undo"))
        rows["redo"] = timed(at, args.reps, press("review_redo"))
        rows["verify cluster"] = timed(at, 1, press("review_verify_cluster"))
        if args.audit:
            audit = AppTest.from_file(str(REPO / "app.py"), default_timeout=1200).switch_page("pages/audit.py")
            audit.session_state["workspace"] = str(workspace.path)
            audit.session_state["run_id"] = run_id
            rows["audit: first render (scores all images)"] = timed(audit, 1, lambda at, i: None)
            rows["audit: keep"] = timed(audit, args.reps, press("audit_keep"))
            rows["audit: move to suggested"] = timed(audit, args.reps, press("audit_move_suggested"))
            rows["audit: exclude"] = timed(audit, args.reps, press("audit_exclude"))
            audit.run()  # the whole page: the decisions above reran only their parts
            rows["audit: re-cluster into a new run"] = timed(audit, 1, press("audit_recluster"))
        workspace.close()
    print(f"\n{'server time per rerun (AppTest)':<42}{'median ms':>10}{'min':>8}{'max':>8}")
    for name, times in rows.items():
        print(f"{name:<42}{statistics.median(times):>10.0f}{min(times):>8.0f}{max(times):>8.0f}")


if __name__ == "__main__":
    main()
