"""The Review page (AppTest): map and cluster list render; every action is one persisted event and changes
what is shown; undo/redo; a reopened session shows the same state; user text is never rendered as markup."""
from __future__ import annotations

import gc
import json
import re
import time

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import tac_core.cluster.projection
from apptest_helpers import open_app
from review_workspace import real_workspace

EVIL = "<img src=x onerror=alert(1)> **bold** :red[x] $x$"


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("TAC_STUDIO_DATA", str(root))
    return root


@pytest.fixture
def workspace(data_dir, elpv_images):
    ws, run_id, ids = real_workspace(data_dir, elpv_images)
    yield ws, run_id, ids
    ws.close()
    release_app_caches()


def release_app_caches() -> None:
    """Drop the app's process-wide caches (workspace handles, arrays) so no test leaves database files open."""
    st.cache_resource.clear()
    st.cache_data.clear()
    gc.collect()


def open_page(ws, run_id) -> AppTest:
    return open_app("pages/review.py", ws, run_id, timeout=60)


def events(ws, run_id) -> list[tuple[str, dict]]:
    rows = ws.connection().execute("SELECT kind, payload FROM events WHERE run_id = ? ORDER BY id", (run_id,))
    return [(kind, json.loads(payload)) for kind, payload in rows]


def cluster_table(at):
    return next(df.value for df in at.dataframe if "Coverage" in df.value.columns and "Anchors" in df.value.columns)


def texts(at) -> list[str]:
    return [t.value for t in at.text]


def click(at, key) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert not errors, errors
    return at


def test_renders_map_cluster_list_and_gallery(workspace):
    ws, run_id, ids = workspace
    at = open_page(ws, run_id)
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    spec = json.loads(charts[0].proto.spec)
    names = [trace["name"] for trace in spec["data"]]
    assert names == ["0 · cluster 0 (9)", "1 · cluster 1 (8)", "2 · cluster 2 (7)"]
    assert charts[0].proto.selection_mode  # lasso/box selection is on
    table = cluster_table(at)
    assert table["Size"].tolist() == [9, 8, 7] and table["Anchors"][0] == "crack 0.31, fracture 0.28"
    assert table["Coverage"].tolist() == [0, 0, 0]
    assert len(at.image) == 9  # the current cluster's thumbnails
    # most confident first, then least confident first
    first = texts(at)[4].split("\n")[0]
    at.toggle(key="review_least_first").set_value(True).run()
    least = [t.split("\n") for t in texts(at) if t.startswith("cell")]
    assert least[0][0] != first and float(least[0][1][:4]) <= float(least[-1][1][:4])


def test_every_action_is_one_persisted_event_and_shows(workspace):
    ws, run_id, ids = workspace
    at = open_page(ws, run_id)

    at.text_input(key="review_new_name").input("cracks")
    click(at, "review_rename")
    assert [k for k, _ in events(ws, run_id)] == ["rename"]
    assert cluster_table(at)["Name"][0] == "cracks" and "Name: cracks" in texts(at)
    assert at.text_input(key="review_new_name").value == ""

    at.multiselect(key="review_merge_sources").select(2)
    click(at, "review_merge")
    assert events(ws, run_id)[-1] == ("merge", {"sources": [2], "target": 0})
    assert cluster_table(at)["Size"].tolist() == [16, 8]

    click(at, "review_auto_split")
    kind, payload = events(ws, run_id)[-1]
    assert kind == "split" and payload["new_cluster"] == 3 and payload["name"] == "cracks (split)"
    table = cluster_table(at)
    assert table["ID"].tolist() == [0, 1, 3] and table["Size"].sum() == 24
    assert at.selectbox(key="review_cluster").value == 3  # the new cluster is opened, ready to be named
    at.selectbox(key="review_cluster").select(0).run()

    chosen = [int(i) for i in ids[[0, 3]]]  # two images of cluster 0
    at.session_state["review_selection_1"] = chosen
    at.run()
    assert any(t.startswith("2 image(s) selected") for t in texts(at))
    at.selectbox(key="review_move_target").select(1)
    click(at, "review_move")
    assert events(ws, run_id)[-1] == ("move", {"image_ids": chosen, "cluster": 1, "verify": False})
    assert cluster_table(at).set_index("ID").loc[1, "Size"] == 10

    click(at, "review_verify_images")
    assert events(ws, run_id)[-1] == ("verify_images", {"image_ids": chosen, "value": True})
    assert cluster_table(at).set_index("ID").loc[1, "Coverage"] == pytest.approx(0.2)

    click(at, "review_verify_cluster")
    assert events(ws, run_id)[-1][0] == "verify_cluster"
    assert at.button(key="review_unverify_cluster").label == "Mark cluster not verified"
    assert bool(cluster_table(at).set_index("ID").loc[0, "Verified"])

    click(at, "review_exclude")
    assert events(ws, run_id)[-1] == ("exclude", {"image_ids": chosen, "value": True})
    assert cluster_table(at).set_index("ID").loc[1, "Excluded"] == 2

    assert not at.button(key="review_undo").disabled and at.button(key="review_redo").disabled
    click(at, "review_undo")
    assert events(ws, run_id)[-1][0] == "undo"
    assert cluster_table(at).set_index("ID").loc[1, "Excluded"] == 0
    assert not at.button(key="review_redo").disabled
    click(at, "review_redo")
    assert events(ws, run_id)[-1][0] == "redo"
    assert cluster_table(at).set_index("ID").loc[1, "Excluded"] == 2
    assert [k for k, _ in events(ws, run_id)] == ["rename", "merge", "split", "move", "verify_images",
                                                  "verify_cluster", "exclude", "undo", "redo"]
    history = next(df.value for df in at.dataframe if "Action" in df.value.columns)
    assert len(history) == 9 and history["Action"][0].startswith("redid")

    # a new browser session (or a restart) shows the same state, read from the log
    again = open_page(ws, run_id)
    assert cluster_table(again).equals(cluster_table(at))


def test_gallery_checkbox_selects_and_selection_splits_off(workspace):
    ws, run_id, ids = workspace
    at = open_page(ws, run_id)
    first = int(ids[0])
    at.checkbox(key=f"review_members_pick_{first}").check().run()
    assert at.session_state["review_selection_1"] == [first]
    assert any(t.startswith("1 image(s) selected") for t in texts(at))
    click(at, "review_split_selection")
    assert events(ws, run_id)[-1] == ("split", {"cluster": 0, "image_ids": [first], "new_cluster": 3,
                                                "name": "cluster 0 (split)"})
    click(at, "review_clear_selection")
    assert at.session_state["review_selection_1"] == []
    assert any(t.startswith("Nothing selected") for t in texts(at))


def test_markup_in_names_is_shown_as_text(workspace):
    ws, run_id, ids = workspace
    at = open_page(ws, run_id)
    at.text_input(key="review_new_name").input(EVIL)
    click(at, "review_rename")
    assert events(ws, run_id)[-1][1]["name"] == EVIL
    assert f"Name: {EVIL}" in texts(at)  # st.text: literal
    assert cluster_table(at)["Name"][0] == EVIL  # dataframe cell: literal
    for element in [*at.markdown, *at.success, *at.caption]:  # Markdown contexts: every trigger escaped
        assert not re.search(r"(?<!\\)(<|\*\*|:red|\$)", element.value), element.value
    assert any("\\<img" in element.value for element in at.success)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["data"][0]["name"].startswith("0 · &lt;img src=x onerror=alert(1)&gt;")


def test_a_second_browser_session_sees_edits(workspace):
    ws, run_id, ids = workspace
    first, second = open_page(ws, run_id), open_page(ws, run_id)
    first.text_input(key="review_new_name").input("cracks")
    click(first, "review_rename")
    second.run()
    assert cluster_table(second)["Name"][0] == "cracks"
    click(second, "review_undo")  # undo is global over the run's log
    first.run()
    assert cluster_table(first)["Name"][0] == "cluster 0"


def test_a_run_without_a_map_gets_one_computed_once_and_saved(data_dir, elpv_images, monkeypatch):
    ws, run_id, ids = real_workspace(data_dir, elpv_images, without=("projection",))
    calls = []

    class Fitted:
        def __init__(self, features):
            self.coordinates = np.asarray(features[:, :2], np.float32)

    def fake_fit(features, **kwargs):  # stands in for UMAP (seconds of numba compilation)
        calls.append(features.shape)
        return Fitted(features)

    monkeypatch.setattr(tac_core.cluster.projection, "fit_projection", fake_fit)
    try:
        at = open_page(ws, run_id)
        assert any("PCA picture" in c.value for c in at.caption)
        for _ in range(100):  # the map is computed in a background thread
            if ws.load_run_array(run_id, "projection") is not None:
                break
            time.sleep(0.05)
        assert calls == [(24, 2 * 16)]  # image and text features, once
        at.run()
        assert any("UMAP map" in c.value for c in at.caption)
        edited = open_page(ws, run_id)
        edited.text_input(key="review_new_name").input("cracks")
        click(edited, "review_rename")
        assert calls == [(24, 2 * 16)]  # an edit never recomputes the map
    finally:
        ws.close()
        release_app_caches()
