"""Cluster sizes on the Review page and possible merges on the Audit page (AppTest): sizes on the chart, the
forced-size warning for a uniform run on an unequal set and not for an estimated one, a possible merge
listed with its evidence and merged with one click (one undoable event)."""
from __future__ import annotations

import gc
import json
import threading
import time
import types

import pandas as pd
import pytest
import streamlit as st
from streamlit.runtime import context as st_context

from apptest_helpers import open_app
from review_workspace import split_class_workspace
import ui.cluster_sizes
from tac_core.run.run_sizes import SIZE_CHECK_FILE


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("TAC_STUDIO_DATA", str(root))
    yield root
    st.cache_resource.clear()  # the app's process-wide caches hold workspace handles and arrays
    st.cache_data.clear()
    gc.collect()


@pytest.fixture
def uniform_run(data_dir, elpv_images):
    ws, run_id, ids = split_class_workspace(data_dir, elpv_images, {"mode": "trained", "balance": "uniform"})
    yield ws, run_id, ids
    ws.close()


def size_chart(at):
    """The size chart's rows (label, name, size, share) in drawing order."""
    [chart] = [c for c in at.get("bidi_component") if c.proto.component_name == "tac_studio.cluster_sizes"]
    bars = pd.DataFrame(json.loads(chart.proto.json)["bars"])
    assert abs(bars["share"].sum() - 1) < 1e-9  # each bar's share of all images, for its tooltip
    return bars


def settled(at):
    """The page once the run's size verdict, computed in the background on a first view, is there."""
    deadline = time.monotonic() + 120
    while any("Checking whether" in c.value.replace("\\", "") for c in at.caption):
        assert time.monotonic() < deadline, "the size verdict never came"
        time.sleep(0.5)
        at.run()
    assert not at.exception, at.exception
    return at


def events(ws, run_id):
    rows = ws.connection().execute("SELECT kind, payload FROM events WHERE run_id = ? ORDER BY id", (run_id,))
    return [(kind, json.loads(payload)) for kind, payload in rows]


def test_review_shows_sizes_largest_first_and_warns_when_a_uniform_run_forced_them(uniform_run):
    ws, run_id, _ = uniform_run
    at = settled(open_app("pages/review.py", ws, run_id, timeout=120))
    rows = size_chart(at)
    assert rows["label"].tolist() == ["0", "1", "2", "3"] and rows["size"].tolist() == [7, 7, 6, 4]
    assert any(c.value.replace("\\", "").startswith("4 clusters · largest 7 (29%) · smallest 4 (16.7%) · median 6.")
               for c in at.caption)
    warnings = [w.value.replace("\\", "") for w in at.warning]
    assert len(warnings) == 1 and warnings[0].startswith("Cluster sizes look forced")
    assert "largest 58 %" in warnings[0] and "From the data (recommended)" in warnings[0]
    assert (ws.run_dir(run_id) / SIZE_CHECK_FILE).is_file()  # decided once, kept beside the run

    at.selectbox(key="review_cluster").set_value(0).run()
    at.multiselect(key="review_merge_sources").set_value([1])
    at.button(key="review_merge").click().run()
    assert not at.exception, at.exception
    rows = size_chart(at)
    assert rows["label"].tolist() == ["0", "2", "3"] and rows["size"].tolist() == [14, 6, 4]
    warning = at.warning[0].value.replace("\\", "")  # still about the run as clustered, and says so
    assert warning.startswith("Cluster sizes look forced") and "the chart shows the clusters as reviewed now" in warning


def test_a_slow_verdict_is_computed_in_the_background_and_shown_on_the_next_update(uniform_run, monkeypatch):
    ws, run_id, _ = uniform_run
    release, real = threading.Event(), ui.cluster_sizes.run_size_check
    monkeypatch.setattr(ui.cluster_sizes, "WAIT_S", 0.0)
    monkeypatch.setattr(ui.cluster_sizes, "run_size_check", lambda *a: release.wait(60) and real(*a))
    at = open_app("pages/review.py", ws, run_id, timeout=120)
    assert size_chart(at)["size"].tolist() == [7, 7, 6, 4] and not at.warning  # the page is not held up
    assert any("Checking whether" in c.value.replace("\\", "") for c in at.caption)
    release.set()
    at = settled(at)
    assert at.warning and at.warning[0].value.replace("\\", "").startswith("Cluster sizes look forced")


def test_an_estimated_run_gets_no_warning(data_dir, elpv_images):
    ws, run_id, _ = split_class_workspace(data_dir, elpv_images, {"mode": "free", "balance": "estimated"},
                                          forced=False)
    try:
        at = settled(open_app("pages/review.py", ws, run_id, timeout=120))
        assert size_chart(at)["size"].tolist() == [14, 6, 2, 2]
        assert not at.warning
        assert any(". Cluster sizes look natural" in c.value.replace("\\", "") for c in at.caption)
    finally:
        ws.close()


def test_audit_lists_the_halves_of_the_big_class_and_merges_them_in_one_click(uniform_run):
    ws, run_id, _ = uniform_run
    at = open_app("pages/audit.py", ws, run_id, timeout=120)
    texts = [t.value for t in at.text]
    assert "1 · cluster 1 (7 images)  →  0 · cluster 0 (7 images)" in texts
    evidence = next(t for t in texts if t.startswith("Centroid similarity"))
    assert evidence.endswith("shared top anchors: crack, fracture")
    assert {"Typical images of 1 · cluster 1", "Typical images of 0 · cluster 0"} <= set(texts)
    button = at.button(key="audit_possible_merge_1_0")
    assert not button.disabled and button.label == "Merge cluster 1 into cluster 0"
    images_before = len(at.get("image"))
    assert images_before >= 8  # four typical images of each side (and the audit's own)

    button.click().run()
    assert not at.exception, at.exception
    assert events(ws, run_id) == [("merge", {"sources": [1], "target": 0})]
    assert "No two clusters look like one group cut in two." in [t.value for t in at.text]
    assert not [b for b in at.button if b.key.startswith("audit_possible_merge_")]
    at.button(key="audit_undo").click().run()  # the review's own undo takes it back
    assert [b.key for b in at.button if b.key.startswith("audit_possible_merge_")] == ["audit_possible_merge_1_0"]


def test_a_viewer_sees_the_possible_merges_but_cannot_merge(app_data, elpv_images, monkeypatch):
    ws, run_id, _ = split_class_workspace(app_data, elpv_images, {"mode": "trained", "balance": "uniform"})
    try:
        ws.add_member("bob", "viewer")
        monkeypatch.setenv("TAC_STUDIO_AUTH", "proxy")
        monkeypatch.delenv("TAC_STUDIO_PROXY_SECRET", raising=False)
        client = types.SimpleNamespace(headers=[("X-Forwarded-User", "bob")], cookies={}, remote_ip=None)
        monkeypatch.setattr(st_context, "_get_client_context", lambda: client)  # as test_access_app does
        at = open_app("pages/audit.py", ws, run_id, timeout=120)
        button = at.button(key="audit_possible_merge_1_0")
        assert button.disabled and "viewer" in button.help
        assert ws.connection().execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    finally:
        ws.close()
