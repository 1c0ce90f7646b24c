"""The Review and Audit pages after a new batch (AppTest): the batch waits behind a button, the new images are
ringed on the map and can be shown alone, the map colours by a metadata field, the open cluster shows where
its images come from, unsorted images become a cluster, and the Audit queue starts with the new ones."""
from __future__ import annotations


import numpy as np
import pytest
import streamlit as st

from apptest_helpers import map_payload, open_app
from intake_workspace import bed_workspace
from tac_core.workspace import metadata
from tac_core.workspace.intake import BUCKET_NAME, record_intake
from tac_core.workspace.review import ReviewSession


@pytest.fixture
def bed(tmp_path, monkeypatch):
    monkeypatch.setenv("TAC_STUDIO_DATA", str(tmp_path / "data"))
    bed = bed_workspace(tmp_path / "data")
    metadata.apply_pattern(bed.workspace, "{line}/{camera}/*.png")
    yield bed
    bed.workspace.close()
    st.cache_resource.clear()
    st.cache_data.clear()


def names(at) -> list[str]:
    """The map's legend: its groups, then the "new" rings when there are any."""
    header = map_payload(at).header
    return [group["label"] for group in header["groups"]] + ([header["rings"]["label"]] if header["rings"] else [])


def drawn(at) -> int:
    """Points drawn in the clusters' (or values') groups, read off their legend entries "<name> (<count>)"."""
    return sum(int(n.rsplit("(", 1)[1][:-1]) for n in names(at) if not n.startswith(("new", "excluded")))


def button(at, key):
    return next(b for b in at.button if b.key == key)


def test_a_batch_waits_then_shows_new_on_the_map_coloured_and_filtered(bed):
    at = open_app("pages/review.py", bed.workspace, bed.run_id, timeout=120)
    n_new = len(bed.batch_ids)
    assert any(f"{n_new:,} image(s) were added to the workspace after this run" in i.value for i in at.info)
    assert button(at, "review_intake").label == f"Sort {n_new:,} new image(s) into this run"
    assert not any(name.startswith("new (") for name in names(at))

    record_intake(ReviewSession(bed.workspace, bed.run_id), bed.batch_ids, bed.batch_x, bed.batch_t, bed.batch_xy)
    at.run()
    assert not at.exception, at.exception
    assert not [b for b in at.button if b.key == "review_intake"]  # nothing left to sort in
    payload = map_payload(at)
    assert payload.header["rings"]["label"] == f"new ({n_new})"
    ringed = payload.arrays["position"][payload.arrays["ring"] == 1]
    assert sorted(ringed.tolist()) == list(range(len(bed.run_ids), len(bed.run_ids) + n_new))  # every new image
    assert any(name.startswith(f"3 · {BUCKET_NAME}") for name in names(at))  # the bucket is a cluster on the map
    assert drawn(at) == len(bed.run_ids) + n_new

    at.toggle(key="review_new_only").set_value(True).run()
    assert drawn(at) == n_new and f"new ({n_new})" in names(at)  # only the new images are drawn

    at.toggle(key="review_new_only").set_value(False).run()
    at.selectbox(key="review_colour_by").set_value("line").run()
    assert not at.exception, at.exception
    by_line = [n for n in names(at) if not n.startswith("new")]
    assert sorted(n.split(" (")[0] for n in by_line) == ["line0", "line1", "line2"]
    assert map_payload(at).header["legend_title"] == "line"

    at.selectbox(key="review_filter_field").set_value("camera").run()
    at.multiselect(key="review_filter_values").set_value(["cam1"]).run()
    table = metadata.metadata_table(bed.workspace, ReviewSession(bed.workspace, bed.run_id).state.image_ids)
    assert drawn(at) == int((table["camera"] == "cam1").sum())
    at.run()  # the whole page: a filter reruns only the map and the gallery
    assert any(s.label == "Where its images come from" for s in at.selectbox)  # the open cluster's sources
    sources = [c for c in at.get("vega_lite_chart") if "Cluster (largest first)" not in c.proto.spec]  # not the sizes
    assert len(sources) == 1  # ... as a bar chart


def test_unsorted_images_become_a_cluster_and_lead_the_audit(bed):
    session = ReviewSession(bed.workspace, bed.run_id)
    record_intake(session, bed.batch_ids, bed.batch_x, bed.batch_t, bed.batch_xy)
    bucket = session.state.bucket
    unsorted = session.state.image_ids[session.state.labels == bucket][:6]
    at = open_app("pages/review.py", bed.workspace, bed.run_id, timeout=120)
    at.session_state[f"review_selection_{bed.run_id}"] = unsorted.tolist()
    at.run()
    button(at, "review_unsorted_cluster").click()
    at.run()
    assert not at.exception, at.exception
    session.refresh()
    new = max(session.state.names)
    assert (session.state.labels[session.state.positions(unsorted)] == new).all()
    assert session.state.names[new] == session.anchors(new)[0][0]  # named from their own best anchor

    audit = open_app("pages/audit.py", bed.workspace, bed.run_id, timeout=180)
    assert not audit.exception, audit.exception
    header = next(t.value for t in audit.text if " in the queue · image " in t.value)
    image_id = int(header.split(" · image ")[1].split(" · ")[0])
    position = int(session.state.positions(np.array([image_id]))[0])
    assert position >= session.state.n_run  # a new image comes first
    assert any("New image, added after the run" in c.value for c in audit.caption)


def test_the_open_cluster_says_when_one_value_dominates_it(bed):
    session = ReviewSession(bed.workspace, bed.run_id)
    state, images = session.state, bed.workspace.images().set_index("id")
    cluster = int(np.bincount(state.labels).argmin())  # the smallest: night shift images are rare elsewhere
    rows = [f"{images.loc[i, 'rel_path']},{'night' if c == cluster else 'day'}"
            for i, c in zip(state.image_ids.tolist(), state.labels.tolist())]
    metadata.join_csv(bed.workspace, "shifts.csv", ("relative_path,shift\n" + "\n".join(rows)).encode())
    at = open_app("pages/review.py", bed.workspace, bed.run_id, timeout=120)
    at.session_state["review_cluster"] = cluster
    at.run()
    share = 100 * (state.labels == cluster).mean()
    expected = f"100 % of cluster {cluster} (cluster {cluster}) comes from shift night; that shift is {share:.0f} % of"
    assert any(expected in w.value.replace("\\", "") for w in at.warning), [w.value for w in at.warning]
    assert at.selectbox(key="review_chart_field").value == "shift"  # the chart opens on the dominated field
    assert any("come mostly from one" in e.label for e in at.expander)
