"""The Review page (AppTest): map and cluster list render; every action is one persisted event and changes
what is shown, and reruns only the parts of the page it changed; undo/redo; a reopened session shows the same
state; user text is never rendered as markup; a running run is named; a million points render and a box
selects every point inside it."""
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
import ui.map_view
from apptest_helpers import map_payload, open_app, select_on_map
from review_workspace import real_workspace, synthetic_workspace
from tac_core.workspace.review import ReviewSession

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
    return next(df.value for df in at.dataframe if "Coverage" in df.value.columns and "Conf." in df.value.columns)


def texts(at) -> list[str]:
    return [t.value for t in at.text]


def click(at, key, whole_page: bool = True) -> AppTest:
    """Click a button; the parts the action reran are then all AppTest shows, so by default the whole page is
    drawn again (``whole_page=False`` keeps just the parts, e.g. to read the toolbar's message)."""
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert not errors, errors
    return at.run() if whole_page else at


def legend(at) -> list[str]:
    return [group["label"] for group in map_payload(at).header["groups"]]


def test_renders_map_cluster_list_and_gallery(workspace):
    ws, run_id, ids = workspace
    at = open_page(ws, run_id)
    components = [c.proto.component_name for c in at.get("bidi_component")]
    assert components == ["tac_studio.review_map", "tac_studio.review_map_texts", "tac_studio.cluster_sizes"]
    payload = map_payload(at)
    assert legend(at) == ["0 · cluster 0 (9)", "1 · cluster 1 (8)", "2 · cluster 2 (7)"]
    # every point, in its cluster's group, at its place on the run's map
    xy = ws.load_run_array(run_id, "projection")
    position, group = payload.arrays["position"], payload.arrays["group"]
    assert sorted(position.tolist()) == list(range(len(ids)))
    labels = ReviewSession(ws, run_id).state.labels
    assert (group == labels[position]).all()
    assert np.allclose(payload.arrays["x"], xy[position, 0]) and np.allclose(payload.arrays["y"], xy[position, 1])
    # the hover names the file (its relative path) and, through the group, its cluster
    rel_paths = ws.run_assignments(run_id)["rel_path"].to_numpy()
    assert payload.hover == rel_paths[position].tolist()
    # thumbnails on the map: each cluster's most confident images at their points, as small JPEGs
    images = payload.header["thumbnails"]
    assert len(images) == 24 and all(uri.startswith("data:image/jpeg;base64,") for _, _, _, uri in images)
    assert {(x, y) for x, y, _, _ in images} <= {(float(a), float(b)) for a, b in xy.astype(np.float32)}
    table = cluster_table(at)
    assert table.columns.tolist() == ["ID", "Name", "Size", "Excl.", "Coverage", "Verified", "Conf.", "Approved"]
    assert table["Size"].tolist() == [9, 8, 7] and table["Coverage"].tolist() == [0, 0, 0]
    assert "Name: cluster 0" in texts(at) and "Not verified" in texts(at)
    assert any(t.startswith("9 images · 0 excluded") and "Anchors: crack 0.31, fracture 0.28" in t for t in texts(at))
    assert len(at.image) == 9  # the open cluster's thumbnails
    # most confident first, then least confident first
    first = next(t for t in texts(at) if t.startswith("cell")).split("\n")[0]
    at.toggle(key="review_least_first").set_value(True).run()
    least = [t.split("\n") for t in texts(at) if t.startswith("cell")]
    assert least[0][0] != first and float(least[0][1][:4]) <= float(least[-1][1][:4])
    at.toggle(key="review_map_thumbnails").set_value(False).run()
    assert map_payload(at).header["thumbnails"] == []


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
    assert cluster_table(at).set_index("ID").loc[1, "Coverage"] == 20  # per cent, whole numbers

    click(at, "review_verify_cluster")
    assert events(ws, run_id)[-1][0] == "verify_cluster"
    assert at.button(key="review_unverify_cluster").label == "Mark cluster not verified"
    assert bool(cluster_table(at).set_index("ID").loc[0, "Verified"])

    click(at, "review_exclude")
    assert events(ws, run_id)[-1] == ("exclude", {"image_ids": chosen, "value": True})
    assert cluster_table(at).set_index("ID").loc[1, "Excl."] == 2

    assert not at.button(key="review_undo").disabled and at.button(key="review_redo").disabled
    click(at, "review_undo")
    assert events(ws, run_id)[-1][0] == "undo"
    assert cluster_table(at).set_index("ID").loc[1, "Excl."] == 0
    assert not at.button(key="review_redo").disabled
    click(at, "review_redo")
    assert events(ws, run_id)[-1][0] == "redo"
    assert cluster_table(at).set_index("ID").loc[1, "Excl."] == 2
    assert [k for k, _ in events(ws, run_id)] == ["rename", "merge", "split", "move", "verify_images",
                                                  "verify_cluster", "exclude", "undo", "redo"]
    assert not [df for df in at.dataframe if "Action" in df.value.columns]  # the history is drawn only when open
    at.session_state["review_history"] = True  # open the toolbar's "History" popover
    at.run()
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
    click(at, "review_rename", whole_page=False)
    assert any("\\<img" in element.value for element in at.success)  # the toolbar's message, escaped
    at.run()
    assert events(ws, run_id)[-1][1]["name"] == EVIL
    assert f"Name: {EVIL}" in texts(at)  # st.text: literal
    assert cluster_table(at)["Name"][0] == EVIL  # dataframe cell: literal
    for element in [*at.markdown, *at.success, *at.caption, *at.subheader]:  # Markdown: every trigger escaped
        assert not re.search(r"(?<!\\)(<|\*\*|:red|\$)", element.value), element.value
    assert any("\\<img" in element.value for element in at.subheader)  # the open cluster's gallery heading
    assert legend(at)[0].startswith("0 · <img src=x onerror=alert(1)>")  # the map writes it as text


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


def test_an_action_reruns_only_the_parts_it_changed(workspace, monkeypatch):
    ws, run_id, ids = workspace
    builds = []
    build = ui.map_view.build_payload
    monkeypatch.setattr(ui.map_view, "build_payload", lambda *a, **k: builds.append(1) or build(*a, **k))
    at = open_page(ws, run_id)
    assert len(builds) == 1
    click(at, "review_verify_cluster", whole_page=False)  # an action on one cluster that moves no image
    assert map_payload(at) is None and cluster_table(at)["Verified"][0]  # the map was not redrawn, the list was
    assert not at.image  # nor the galleries
    at.run()  # the whole page again: the same figure, from the cache
    assert len(builds) == 1 and map_payload(at) is not None
    click(at, "sign_off_approve", whole_page=False)  # a sign-off changes the list, not the map
    assert map_payload(at) is None and cluster_table(at)["Approved"][0] != ""
    at.run()
    assert len(builds) == 1
    at.session_state["review_selection_1"] = [int(i) for i in ids[:3]]
    at.run()
    assert len(builds) == 1  # a selection draws nothing on the map
    at.text_input(key="review_new_name").input("cracks")
    click(at, "review_rename", whole_page=False)  # a name shows in the map's legend: rebuilt
    assert len(builds) == 2 and legend(at)[0] == "0 · cracks (9)"
    assert not at.image  # the galleries show no names
    click(at, "review_undo")
    assert len(builds) == 3 and legend(at)[0] == "0 · cluster 0 (9)"


def test_bulk_selection_never_takes_excluded_images(workspace):
    ws, run_id, ids = workspace
    members = ReviewSession(ws, run_id).members(0)["image_id"].tolist()
    ReviewSession(ws, run_id, session_id="setup").exclude(members[:2])
    at = open_page(ws, run_id)
    at.selectbox(key="review_cluster").select(0).run()
    click(at, "review_select_page")
    assert at.session_state["review_selection_1"] == sorted(members[2:])
    click(at, "review_verify_images")
    assert events(ws, run_id)[-1] == ("verify_images", {"image_ids": sorted(members[2:]), "value": True})
    click(at, "review_clear_selection")
    click(at, "review_select_cluster")
    assert at.session_state["review_selection_1"] == sorted(members[2:])
    # ticking an excluded image on its own selects it (to include it again)
    at.checkbox(key=f"review_members_pick_{members[0]}").check().run()
    assert members[0] in at.session_state["review_selection_1"]


def test_a_box_or_lasso_on_the_map_selects_every_image_inside(workspace):
    ws, run_id, ids = workspace
    at = open_page(ws, run_id)
    xy = ws.load_run_array(run_id, "projection")
    labels = ReviewSession(ws, run_id).state.labels
    box = {"x": [-1.5, 5.5], "y": [-1.5, 3.0]}  # cluster 0 around (0, 0) and part of cluster 1 around (4, 3)
    inside = (xy[:, 0] >= -1.5) & (xy[:, 0] <= 5.5) & (xy[:, 1] >= -1.5) & (xy[:, 1] <= 3.0)
    caught = np.flatnonzero(inside & (labels == 0)).tolist()  # cluster 1 hidden in the legend
    select_on_map(at, {"points": caught, "box": [box]})
    assert not at.exception
    assert at.session_state["review_selection_1"] == sorted(ids[inside & (labels == 0)].tolist())
    assert map_payload(at) is None  # selecting does not redraw the map
    at.run()
    caught.append(int(np.flatnonzero(inside & (labels == 1))[0]))
    lasso = {"x": [-1.5, 5.5, 5.5, -1.5], "y": [-1.5, -1.5, 3.0, 3.0]}
    select_on_map(at, {"points": caught, "lasso": [lasso]})
    selected = at.session_state["review_selection_1"]
    assert sorted(selected) == sorted(ids[inside & np.isin(labels, [0, 1])].tolist())


def test_a_running_run_is_named_with_a_link_to_it(workspace):
    ws, run_id, ids = workspace
    running = ws.create_run({"n_clusters": 3, "mode": "free"}, ids)
    ws.set_run_status(running, "running")
    at = open_page(ws, run_id)
    assert any(f"Run {running} is running" in i.value for i in at.info)
    links = [link for link in at.get("page_link") if link.proto.label == f"Follow run {running} on the Cluster page"]
    assert links and links[0].proto.page.endswith("cluster")
    assert cluster_table(at)["Size"].tolist() == [9, 8, 7]  # the finished run is still reviewed


@pytest.mark.slow
@pytest.mark.timeout(900)  # building a million-image workspace takes minutes on a loaded 2-core machine
def test_a_million_points_render_and_a_box_selects_exactly(data_dir):
    ws, run_id = synthetic_workspace(data_dir, 1_000_000, 12, dim=4, thumbnails=False)
    try:
        at = open_app("pages/review.py", ws, run_id, timeout=600)
        payload = map_payload(at)
        assert payload.header["n"] < 60_000  # a bounded sample, not a million points
        sizes = {int(name.split(" · ")[0]): int(name.rsplit("(", 1)[1][:-1]) for name in legend(at)}
        labels = ws.run_assignments(run_id)["cluster"].to_numpy()
        assert sizes == dict(enumerate(np.bincount(labels).tolist()))  # exact sizes in the legend
        xy = ws.load_run_array(run_id, "projection")
        box = {"x": [-5.0, 5.0], "y": [-5.0, 5.0]}
        inside = (xy[:, 0] >= -5) & (xy[:, 0] <= 5) & (xy[:, 1] >= -5) & (xy[:, 1] <= 5)
        assert inside.sum() > 60_000  # more than the map draws
        caught = [int(np.flatnonzero(inside & (labels == c))[0]) for c in np.unique(labels[inside])]
        select_on_map(at, {"points": caught, "box": [box]})
        assert not at.exception
        assert len(at.session_state["review_selection_1"]) == int(inside.sum())
        assert any(t.value.startswith(f"{int(inside.sum())} image(s) selected") for t in at.text)
    finally:
        ws.close()
        release_app_caches()
