"""A second batch after review, from the shell: metadata from paths (kept for the batch), ``workspace intake``
sorting the batch into the reviewed run with real images and the tiny model, ``classify`` by the reviewed run,
and the export holding both batches with their metadata."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tac_core.run.cli import main
from tac_core.workspace.intake import session_arrays
from tac_core.workspace.metadata import metadata_table
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import open_workspace

from test_workspace_cli import bundle_labels


def batches(elpv_images, textile_images, root):
    """batch1: 16 solar cells from line1 (two cameras); batch2: 8 more from line2 and 6 textile photos."""
    cells = sorted(elpv_images.glob("*.png"))
    first, second = root / "batch1", root / "batch2"
    for i, path in enumerate(cells[:16]):
        (first / "line1" / f"cam{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, first / "line1" / f"cam{i % 2}" / path.name)
    (second / "line2" / "cam0").mkdir(parents=True)
    for path in cells[16:]:
        shutil.copy(path, second / "line2" / "cam0" / path.name)
    (second / "line2" / "cam9").mkdir()
    for path in sorted(textile_images.rglob("*.jpg"))[:6]:
        shutil.copy(path, second / "line2" / "cam9" / f"{path.parent.name}_{path.name}")
    return first, second


@pytest.mark.slow
def test_a_second_batch_is_sorted_into_the_reviewed_run_from_the_shell(elpv_images, textile_images, tiny_model_config,
                                                                      tiny_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "data"
    first, second = batches(elpv_images, textile_images, tmp_path / "photos")

    def verb(*args) -> str:
        assert main(["workspace", *map(str, args), "--data", str(data)]) == 0, capsys.readouterr().err
        return capsys.readouterr().out

    verb("create", "Line 3")
    verb("add", "Line 3", first)
    verb("vocab", "Line 3", "small", "--categories", "noun.shape", "--templates", "photo1")
    verb("run", "Line 3", "--k", 3, "--model", tiny_model_config, "--checkpoint", tiny_checkpoint, "--map", "pca",
         "--no-suggest-k")
    preview = verb("metadata", "Line 3", "--pattern", "{line}/{camera}/*", "--preview")
    assert preview.splitlines()[0] == "relative_path,line,camera" and "line1,cam0" in preview
    verb("metadata", "Line 3", "--pattern", "{line}/{camera}/*")

    workspace = open_workspace("Line 3", data)
    try:
        session = ReviewSession(workspace, 1)
        first_ids = session.state.image_ids.copy()
        session.rename(0, "dark cell")
        session.verify_images(first_ids[:3])
        session.verify_cluster(1)
        before = session.state.labels.copy()

        verb("add", "Line 3", second)  # the saved pattern describes the new batch at once
        event = int(verb("intake", "Line 3", "--run", 1).strip())
        session.refresh()
        state = session.state
        n_new = 14
        assert session.history()[-1]["event_id"] == event and len(state.labels) == len(first_ids) + n_new
        np.testing.assert_array_equal(state.labels[:len(first_ids)], before)
        assert state.verified[:3].all() and 1 in state.verified_clusters and state.names[0] == "dark cell"
        assert state.new_mask().sum() == n_new and set(state.labels[-n_new:]) <= set(state.names)
        xy = session_arrays(session)("projection")
        np.testing.assert_array_equal(xy[:len(first_ids)], workspace.load_run_array(1, "projection"))
        assert xy.shape == (len(state.labels), 2) and np.isfinite(xy).all()
        table = metadata_table(workspace, state.image_ids)
        assert set(table["line"]) == {"line1", "line2"} and (table["camera"].iloc[-6:] == "cam9").all()

        out = tmp_path / "sorted"
        assert main(["classify", "--workspace", str(workspace.path), "--run", "1", "--images", str(second),
                     "--out", str(out)]) == 0
        predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
        assert len(predictions) == n_new and set(predictions["label"]) <= {*state.names.values()}
        rows, manifest = bundle_labels(Path(verb("export", "Line 3", "--run", 1, "--zip").strip()))
        assert len(rows) == len(state.labels) and {r["line"] for r in rows} == {"line1", "line2"}
        assert manifest["columns"][-2:] == ["camera", "line"]
        assert main(["workspace", "intake", "Line 3", "--data", str(data)]) == 2  # nothing left to add
        assert "no images to add" in capsys.readouterr().err
    finally:
        workspace.close()
