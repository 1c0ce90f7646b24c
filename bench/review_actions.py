"""Server time of review actions on a 50,000-image run: ``python -m bench.review_actions``.

Builds a synthetic workspace in a temporary folder (50k fake image records, 100 clusters with one of
20k images, 10 anchors each, a log of 200 earlier edits), then prints the median, min and max milliseconds
of opening a session and of each action. Every action is timed with its SQLite commit (synchronous=FULL,
so an fsync) and the ``clusters()`` frame the app redraws afterwards; timed actions that change the state are
undone untimed, so each repetition starts from the same state.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Callable

import numpy as np

from tac_core.workspace.export import export_labels
from tac_core.inputs.imageset import ImageRecord, ImageSet
from tac_core.run.params import RunParams
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import Workspace, create_workspace


def build_workspace(root: str, n_images: int, n_clusters: int, n_events: int, seed: int = 0) -> tuple[Workspace, int]:
    """A workspace with one done run over ``n_images`` images and ``n_events`` edits in its log."""
    rng = np.random.default_rng(seed)
    workspace = create_workspace("bench", root)
    records = tuple(ImageRecord(f"/plant/line/{i:06d}.png", f"line/{i:06d}.png", f"{i:064x}", 1000, 64, 64, "ok", "")
                    for i in range(n_images))
    ids = np.array(workspace.add_image_set(ImageSet("/plant", records), "folder", "/plant").image_ids)
    labels = np.where(rng.random(n_images) < 0.4, 0, rng.integers(1, n_clusters, n_images))
    anchors = [[(f"term{c}_{r}", 0.4 - 0.01 * r) for r in range(10)] for c in range(n_clusters)]
    run_id = workspace.create_run(RunParams(n_clusters, projection="pca", suggest_k=False).to_dict(), ids)
    workspace.set_run_status(run_id, "running")
    workspace.save_run_result(run_id, ids, labels, rng.random(n_images), anchors,
                              {"image_embeddings": rng.standard_normal((n_images, 8)).astype(np.float32)})
    session = ReviewSession(workspace, run_id, session_id="history")
    for i in range(n_events):
        step = i % 5
        if step == 0:
            session.rename(1 + i % 40, f"defect {i}")
        elif step == 1:
            session.move(rng.choice(ids, 500, replace=False), 1 + i % 40)
        elif step == 2:
            session.verify_images(rng.choice(ids, 500, replace=False))
        elif step == 3:
            session.exclude(rng.choice(ids, 20, replace=False))
        else:
            session.undo()
    return workspace, run_id


def timed(fn: Callable[[], object], reps: int, before: Callable[[], object] = lambda: None,
          after: Callable[[], object] = lambda: None) -> list[float]:
    """Milliseconds of ``fn`` over ``reps`` runs; ``before``/``after`` run untimed around each."""
    times = []
    for _ in range(reps):
        before()
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
        after()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="tac-bench-") as root:
        started = time.perf_counter()
        workspace, run_id = build_workspace(root, args.images, args.clusters, args.events)
        print(f"built {args.images} images, {args.clusters} clusters, {args.events} events in "
              f"{time.perf_counter() - started:.1f} s")
        session = ReviewSession(workspace, run_id)
        ids = session.state.image_ids
        big = lambda: ids[session.state.labels == 0]  # noqa: E731  (the 20k-image cluster)
        merges = iter(range(args.clusters - 1, 40, -1))
        rows = {
            "open session": timed(lambda: ReviewSession(workspace, run_id), args.reps),
            "rename + clusters()": timed(lambda: (session.rename(2, f"name {rng.random()}"), session.clusters()),
                                         args.reps),
            "merge + clusters()": timed(lambda: (session.merge(next(merges), 3), session.clusters()), args.reps),
            "move 5k + clusters()": timed(lambda: (session.move(rng.choice(ids, 5000, replace=False), 4),
                                                   session.clusters()), args.reps, after=session.undo),
            "split 5k + clusters()": timed(lambda: (session.split(0, big()[:5000]), session.clusters()), args.reps,
                                           after=session.undo),
            "undo (merge) + clusters()": timed(lambda: (session.undo(), session.clusters()), args.reps,
                                               before=lambda: session.merge(next(merges), 5)),
            "redo (merge) + clusters()": timed(lambda: (session.redo(), session.clusters()), args.reps,
                                               before=session.undo),
            "clusters()": timed(session.clusters, args.reps),
            "refresh (nothing new)": timed(session.refresh, args.reps),
            "export CSV, 50k rows": timed(lambda: export_labels(session, workspace, run_id), 3),
        }
        workspace.close()
    print(f"\n{'action':<28}{'median ms':>10}{'min':>8}{'max':>8}")
    for name, times in rows.items():
        print(f"{name:<28}{statistics.median(times):>10.1f}{min(times):>8.1f}{max(times):>8.1f}")


if __name__ == "__main__":
    main()
