"""The Audit page (AppTest): the queue in rank order with reasons, one event per decision, progress,
contact sheets, and re-clustering into a new run that keeps the reviewer's decisions."""
from __future__ import annotations

import gc
import json
import re

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from apptest_helpers import open_app
from review_workspace import MISLABELLED, real_workspace
from tac_core.workspace.review import ReviewSession



@pytest.fixture
def workspace(tmp_path, monkeypatch, elpv_images):
    root = tmp_path / "data"
    monkeypatch.setenv("TAC_STUDIO_DATA", str(root))
    ws, run_id, ids = real_workspace(root, elpv_images)
    yield ws, run_id, ids
    ws.close()
    release_app_caches()


def release_app_caches() -> None:
    """Drop the app's process-wide caches (workspace handles, arrays) so no test leaves database files open."""
    st.cache_resource.clear()
    st.cache_data.clear()
    gc.collect()


def open_page(ws, run_id) -> AppTest:
    return open_app("pages/audit.py", ws, run_id, timeout=60)


def click(at, key) -> AppTest:
    """Click a button, then draw the whole page (the click reruns only the parts it changed)."""
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at.run()


def events(ws, run_id) -> list[tuple[str, dict]]:
    rows = ws.connection().execute("SELECT kind, payload FROM events WHERE run_id = ? ORDER BY id", (run_id,))
    return [(kind, json.loads(payload)) for kind, payload in rows]


def current(at) -> int:
    """Image id of the item shown for a decision."""
    header = next(t.value for t in at.text if t.value.startswith("#"))
    return int(header.split("· image ")[1].split(" ")[0])


def clusters_shown(at) -> list[int]:
    """The item's cluster and suggested cluster, as shown ("<id> · <name>")."""
    return [int(t.value.split(" · ")[0]) for t in at.text if re.match(r"^\d+ · ", t.value)]


def progress(at) -> str:
    return at.get("progress")[0].proto.text


def upcoming(at):
    return next(df.value for df in at.dataframe if "Why" in df.value.columns)


def test_queue_in_rank_order_with_reasons_and_decisions(workspace):
    ws, run_id, ids = workspace
    at = open_page(ws, run_id)
    planted = {int(ids[1]), int(ids[5]), int(ids[MISLABELLED])}
    assert current(at) in planted  # a planted misfit comes first
    header = next(t.value for t in at.text if t.value.startswith("#"))
    assert header.startswith("#1 in the queue")
    table = upcoming(at)
    assert table["Rank"].tolist() == list(range(2, 2 + len(table)))  # rank order
    assert (table["Suspicion"].diff().dropna() <= 1e-6).all()
    assert table["Why"].str.len().gt(0).all()
    assert progress(at) == "0 of 24 reviewed"
    labels = [b.label for b in at.button if b.key and b.key.startswith("audit_")]
    assert labels[:8] == ["Undo", "Redo", "Rescore queue", "Keep", "Move to suggested", "Exclude", "Skip",
                          "Move to chosen"]

    first = current(at)
    click(at, "audit_keep")
    assert events(ws, run_id)[-1] == ("verify_images", {"image_ids": [first], "value": True})
    assert progress(at) == "1 of 24 reviewed" and current(at) != first

    second = current(at)
    own, suggested = clusters_shown(at)
    assert own != suggested
    click(at, "audit_move_suggested")
    assert events(ws, run_id)[-1] == ("move", {"image_ids": [second], "cluster": suggested, "verify": True})
    assert progress(at) == "2 of 24 reviewed"

    third = current(at)
    click(at, "audit_skip")
    assert len(events(ws, run_id)) == 2 and current(at) != third  # skipping records nothing

    fourth = current(at)
    click(at, "audit_exclude")
    assert events(ws, run_id)[-1] == ("exclude", {"image_ids": [fourth], "value": True})
    assert progress(at) == "3 of 24 reviewed"

    click(at, "audit_undo")
    assert progress(at) == "2 of 24 reviewed" and current(at) == fourth

    own, suggested = clusters_shown(at)
    other = next(c for c in (0, 1, 2) if c not in (own, suggested))
    assert at.selectbox(key="audit_move_to").value == suggested  # "Move to…" starts at the suggestion
    at.selectbox(key="audit_move_to").select(other)
    click(at, "audit_move")
    assert events(ws, run_id)[-1] == ("move", {"image_ids": [fourth], "cluster": other, "verify": True})
    assert progress(at) == "3 of 24 reviewed"

    # coverage meter per cluster, contact sheet of a cluster
    coverage = next(df.value for df in at.dataframe if "Waiting in queue" in df.value.columns)
    assert coverage["Coverage"].between(0, 100).all() and coverage["Coverage"].sum() > 0
    assert [m.value for m in at.markdown][-3:] == ["**Most typical**", "**Nearest the boundary**",
                                                   "**Farthest from the centre**"]
    assert len(at.image) >= 1 + 6  # the item, its examples, the contact sheet


def test_recluster_creates_a_new_run_keeping_decisions(workspace):
    ws, run_id, ids = workspace
    session = ReviewSession(ws, run_id, session_id="setup")
    session.rename(0, "cracks")
    session.verify_cluster(1)  # a closed cluster: nothing joins or leaves it
    session.verify_images([int(ids[5])])  # a misfit the reviewer kept where it is (cluster 2)
    session.move([int(ids[9])], 2)  # a decision: image 9 (cluster 0) belongs in cluster 2
    at = open_page(ws, run_id)
    click(at, "audit_recluster")
    runs = ws.runs()
    new_run = int(runs["id"].max())
    assert new_run != run_id and int(runs.set_index("id").loc[new_run, "parent_run_id"]) == run_id
    assert any(f"Run {new_run} created" in s.value.replace("\\", "") for s in at.success)
    changes = next(df.value for df in at.dataframe if "Images" in df.value.columns)
    assert changes.iloc[0].to_dict() == {"From ID": 0, "From": "cracks", "To ID": 2, "To": "cluster 2", "Images": 1}

    child = ReviewSession(ws, new_run)
    frame = child.clusters().set_index("name")
    assert frame.loc["cluster 1", "verified"] and frame.loc["cluster 1", "verified_share"] == 1.0
    pos = child.state.positions(np.array([ids[5], ids[9], ids[MISLABELLED]]))
    names = [child.state.names[c] for c in child.state.labels[pos]]
    assert names == ["cluster 2", "cluster 2", "cluster 2"]  # kept, moved, and the mislabelled one fixed
    assert child.state.verified[pos[:2]].all() and not child.state.verified[pos[2]]
    assert sorted(child.state.names.values()) == ["cluster 1", "cluster 2", "cracks"]
    assert np.array_equal(ws.load_run_array(new_run, "projection"), ws.load_run_array(run_id, "projection"))
    assert {h["session"] for h in child.history()} == {f"carried from run {run_id}"}

    click(at, "audit_open_new_run")
    assert at.selectbox(key="audit_run").value == new_run
    assert at.session_state["run_id"] == new_run
    # going back: the old run is untouched
    assert ReviewSession(ws, run_id).clusters()["name"].tolist() == ["cracks", "cluster 1", "cluster 2"]


def test_trained_runs_score_with_head_probabilities_grouped_by_merges(workspace):
    ws, run_id, ids = workspace
    labels = ws.run_assignments(run_id)["cluster"].to_numpy()
    p = np.full((len(ids), 3), 0.05, np.float32)
    p[np.arange(len(ids)), labels] = 0.9
    ws.save_run_array(run_id, "probabilities", p)
    ws.save_run_array(run_id, "text_probabilities", p)
    at = open_page(ws, run_id)
    assert any("Scores: trained mode" in t.value for t in at.text)
    session = ReviewSession(ws, run_id)
    session.merge(2, 0)  # the merged cluster's probability is the sum of its parts
    at.button(key="audit_rescore_button").click().run()
    assert any("Scores: trained mode" in t.value for t in at.text)
    session.split(1, [int(ids[1])])  # a cluster the heads never saw: free-mode scores
    at.button(key="audit_rescore_button").click().run()
    assert any("Scores: free mode" in t.value for t in at.text)
    assert not at.exception


def test_progress_is_the_same_in_a_new_browser_session(workspace):
    ws, run_id, ids = workspace
    at = open_page(ws, run_id)
    assert progress(at) == "0 of 24 reviewed"
    for key in ("audit_keep", "audit_exclude", "audit_keep"):
        click(at, key)
    assert progress(at) == "3 of 24 reviewed"
    again = open_page(ws, run_id)  # a new browser session scores the queue afresh, without the decided images
    assert progress(again) == "3 of 24 reviewed"


def test_a_decision_reruns_only_the_parts_it_changed_and_coverage_reads_alike(workspace):
    ws, run_id, ids = workspace
    at = open_page(ws, run_id)
    shown = len(at.image)
    at.button(key="audit_keep").click().run()  # only the parts a decision changes: no contact sheet drawn
    assert progress(at) == "1 of 24 reviewed" and not any("Most typical" in m.value for m in at.markdown)
    assert len(at.image) < shown
    at.run()
    for table in (next(df for df in at.dataframe if "Waiting in queue" in df.value.columns),):
        config = json.loads(table.proto.columns)["Coverage"]
        assert config["type_config"]["format"] == "%d%%"  # whole per cents, one format ("0%", "36%")
        assert table.value["Coverage"].between(0, 100).all() and (table.value["Coverage"] % 1 == 0).all()
