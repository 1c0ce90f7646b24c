"""A workspace written by TAC Studio 0.1 (``tests/data/legacy_workspace.md``) reviews, audits and exports in
this version exactly as the old code did (``tests/data/legacy_workspace_expected.json``).

Run 1 was reviewed (rename, moves, verifications, an exclusion, a verified cluster, an undone rename) and
exported; run 2 is run 1 re-clustered with those decisions. Each test works on a copy: opening a workspace
may write to it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tac_core

from tac_core.workspace.export import export_labels
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.review_audit import audit_session
from tac_core.workspace.workspace import open_workspace

DATA = Path(__file__).with_name("data")
EXPECTED = json.loads((DATA / "legacy_workspace_expected.json").read_text(encoding="utf-8"))
WRITER = ("created", "csv_file", "tac_core_version", "exported_by")  # the export itself: when, which version, who


@pytest.fixture
def legacy(tmp_path):
    folder = tmp_path / "legacy"
    shutil.copytree(DATA / "legacy_workspace", folder)
    workspace = open_workspace(folder)
    yield workspace
    workspace.close()


@pytest.mark.parametrize("run_id", [1, 2])
def test_review_state_and_decisions_are_those_the_old_code_gave(legacy, run_id):
    expected = EXPECTED[str(run_id)]
    session = ReviewSession(legacy, run_id)
    state = session.state
    assert state.labels.tolist() == expected["labels"]
    assert state.names == {int(c): name for c, name in expected["names"].items()}
    assert state.verified.tolist() == expected["verified"]
    assert state.excluded.tolist() == expected["excluded"]
    assert session.decided().tolist() == expected["decided"]
    assert session.edit_count == expected["edit_count"]


@pytest.mark.parametrize("run_id", [1, 2])
def test_audit_queue_and_suggestions_are_those_the_old_code_gave(legacy, run_id):
    expected = EXPECTED[str(run_id)]
    queue = audit_session(ReviewSession(legacy, run_id))
    assert queue.queue.tolist() == expected["audit_queue"]
    assert queue.suggested[queue.queue].tolist() == expected["audit_suggested"]
    assert queue.score[queue.queue] == pytest.approx(expected["audit_score"], abs=1e-6)  # stored to 6 decimals
    assert queue.mode == "free"


def test_export_of_run_1_gives_the_stored_csv(legacy, tmp_path):
    stored_manifest_path = next((DATA / "legacy_workspace" / "exports").glob("labels_run1_*_manifest.json"))
    stored_manifest = json.loads(stored_manifest_path.read_text(encoding="utf-8"))
    stored_csv = (stored_manifest_path.parent / stored_manifest["csv_file"]).read_bytes()
    result = export_labels(ReviewSession(legacy, 1), legacy, 1, dest_dir=tmp_path / "out")
    assert result.csv_bytes == stored_csv
    assert result.csv_path.read_bytes() == stored_csv
    assert {k: v for k, v in result.manifest.items() if k not in WRITER} == \
        {k: v for k, v in stored_manifest.items() if k not in WRITER}
    assert result.manifest["tac_core_version"] == tac_core.__version__


def test_run_2_is_run_1_reclustered_with_its_decisions_carried(legacy):
    run = legacy.run(2)
    assert run["parent_run_id"] == 1 and run["params"]["recluster"]["parent_run_id"] == 1
    history = ReviewSession(legacy, 2).history()
    assert [h["kind"] for h in history] == ["verify_images", "verify_cluster", "exclude"]
    assert {h["session"] for h in history} == {"carried from run 1"}
    assert {h["user"] for h in history} == {"unknown"}  # written before users existed
    assert np.array_equal(legacy.load_run_array(2, "projection"), legacy.load_run_array(1, "projection"))
