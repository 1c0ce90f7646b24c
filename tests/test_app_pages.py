"""The app's pages through Streamlit's AppTest: navigation, home, images, vocabulary, cluster and export.

Jobs run inside the test process (``TAC_STUDIO_JOBS_INLINE=1``); tests/test_jobs.py covers the subprocess.
"""
from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import ROOT, open_app, registered_pages
from bad_inputs import encode, pattern
from tac_core.devices import DEVICES
from tac_core.workspace import ingest
from tac_core.run import jobs
from tac_core.run import params as run_params
from tac_core.inputs import vocab_spec
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import create_workspace, list_workspaces



@pytest.fixture
def data(app_data) -> Path:
    return app_data


def app(page: str | None = None, workspace=None) -> AppTest:
    """The app as a browser opens it (with ?ws=… when a workspace is given), on ``page``."""
    return open_app(page, workspace, timeout=180)


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r}; buttons: {[b.label for b in at.button]}"
    return matches[0]


def text_input(at: AppTest, label: str):
    return next(t for t in at.text_input if t.label == label)


def click(at: AppTest, label: str) -> AppTest:
    button(at, label).click()
    at.run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def messages(at: AppTest, kind: str) -> list[str]:
    return [e.value for e in getattr(at, kind)]


def small_spec() -> dict:
    return {**vocab_spec.default_spec(), "categories": ["noun.shape"], "domain_packs": ["surface_defects"],
            "templates": "photo1"}


@pytest.fixture
def images_ws(data, elpv_images):
    ws = create_workspace("Line 3", data)
    ingest.add_folder(ws, elpv_images)
    ws.save_vocab_set("small", small_spec())
    yield ws
    ws.close()


@pytest.fixture
def tiny_choice(tiny_model_config, tiny_checkpoint) -> dict:
    return {"name": str(tiny_model_config), "pretrained": "openai", "checkpoint": str(tiny_checkpoint)}


# -- navigation --------------------------------------------------------------------------------------------
STEPS = ["Images", "Vocabulary", "Cluster", "Review", "Audit", "Export", "History"]


def test_the_sidebar_lists_every_page_by_title_with_an_icon_and_a_readable_url(data):
    pages = registered_pages(app())
    assert [p["page_name"] for p in pages] == ["Workspaces", *STEPS]  # the home page is not called "app"
    assert [p["url_pathname"] for p in pages] == ["", *(title.lower() for title in STEPS)]
    assert all(p["icon"].startswith(":material/") and p["help"] for p in pages)  # no emoji, a tooltip each
    files = sorted(Path(p["script_path"]).relative_to(ROOT).as_posix() for p in pages)
    assert files == sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "pages").glob("*.py"))
    assert all(name.isascii() for name in files)
    assert not (ROOT / "app_pages").exists()


def test_home_links_every_step_in_the_sidebar_order_keeping_the_workspace(data):
    ws = create_workspace("steps", data)
    at = app(workspace=ws)
    links = at.get("page_link")
    assert [link.value for link in links] == STEPS
    assert [link.proto.page for link in links] == [p["url_pathname"] for p in registered_pages(at)][1:]
    assert {link.proto.query_string for link in links} == {f"ws={ws.path.name}"}
    assert {link.proto.help for link in links} == {""}  # no tooltip to cover the next link: the step is said in words
    tips = [p["help"] for p in registered_pages(at)][1:]
    assert [c.value for c in at.caption if c.value in tips] == tips


def test_every_page_puts_the_workspace_back_into_the_url(data):
    """The sidebar's links leave ``?ws=`` out; the page opened from them puts it back, so a refresh stays."""
    ws = create_workspace("url", data)
    at = app("pages/images.py", ws)
    at.query_params.clear()
    at.switch_page("pages/vocabulary.py").run()
    assert [t.value for t in at.title] == ["Vocabulary"] and at.query_params == {"ws": ws.path.name}


# -- home --------------------------------------------------------------------------------------------------
def test_home_creates_renames_and_deletes_with_confirmation(data):
    at = app()
    assert "TAC_STUDIO_DATA" in " ".join(c.value for c in at.caption)
    assert str(data) in [c.value for c in at.code]
    text_input(at, "Workspace name").input("Line 3 <b>solder</b> *joints*")
    click(at, "Create workspace")
    [info] = list_workspaces(data)
    assert info.name == "Line 3 <b>solder</b> *joints*"
    assert at.session_state["workspace"] == str(info.path)
    assert at.dataframe[0].value["name"].tolist() == [info.name]  # shown as text in a table
    assert not any("<b>" in m.value for m in [*at.markdown, *at.success])  # never rendered as markup
    assert any("Line 3" in s for s in messages(at, "success"))

    text_input(at, "Workspace name").input("line 3 <B>SOLDER</b> *joints*")
    click(at, "Create workspace")
    assert any("already exists" in e for e in messages(at, "error")) and len(list_workspaces(data)) == 1

    text_input(at, "New name").input("Line 3, March")
    click(at, "Rename workspace")
    assert [i.name for i in list_workspaces(data)] == ["Line 3, March"]
    assert at.session_state["workspace"] == str(info.path)  # still open after a rename

    click(at, "Delete workspace")
    assert list_workspaces(data) and any("cannot be undone" in w for w in messages(at, "warning"))
    click(at, "Keep it")
    assert list_workspaces(data) and not [b for b in at.button if b.label == "Confirm delete"]
    click(at, "Delete workspace")
    click(at, "Confirm delete")
    assert list_workspaces(data) == [] and not info.path.exists()
    assert any("No workspaces yet" in i for i in messages(at, "info"))


def test_home_lists_a_broken_workspace_with_its_problem(data):
    create_workspace("good", data)
    (data / "broken-1234").mkdir()
    at = app()
    table = at.dataframe[0].value
    assert set(table["name"]) == {"good", "broken-1234"}
    assert "not a workspace" in table.set_index("name").loc["broken-1234", "problem"]
    at.selectbox(key="home_workspace").set_value(str((data / "broken-1234").resolve())).run()
    assert any("cannot be opened" in e for e in messages(at, "error"))
    click(at, "Delete workspace")
    click(at, "Confirm delete")
    assert [i.name for i in list_workspaces(data)] == ["good"]


# -- images ------------------------------------------------------------------------------------------------
def test_images_page_adds_a_folder_and_lists_what_was_skipped(data, elpv_images, tmp_path):
    ws = create_workspace("imgs", data)
    folder = tmp_path / "share"
    folder.mkdir()
    for path in sorted(elpv_images.iterdir())[:6]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "notes.jpg").write_bytes(b"inspection notes, no image")
    (folder / "empty.png").write_bytes(b"")
    (folder / "copy.png").write_bytes(sorted(elpv_images.iterdir())[0].read_bytes())
    at = app("pages/images.py", ws)
    assert any("No images yet" in i for i in messages(at, "info"))

    text_input(at, "Folder path").input("photos/relative")
    click(at, "Add folder")
    assert any("not a full path" in e for e in messages(at, "error"))

    text_input(at, "Folder path").input(str(folder))
    click(at, "Add folder")
    assert metrics(at) == {"Usable images": "6", "Duplicates": "1", "Skipped": "2", "Sources": "1"}
    assert any("6 new image" in s for s in messages(at, "success"))
    skipped = next(d.value for d in at.dataframe if "reason" in d.value.columns and "source" in d.value.columns)
    reasons = dict(zip(skipped["file"], skipped["reason"]))
    assert reasons["empty.png"] == "empty file" and "not an image" in reasons["notes.jpg"]
    assert "same content as" in reasons["copy.png"]
    assert len(at.image) == 6  # the sample grid of thumbnails


def test_images_page_uploads_files_and_a_zip(data, tmp_path):
    ws = create_workspace("uploads", data)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zipped/a.png", encode(pattern((30, 20), 11), "PNG"))
        z.writestr("../evil.png", encode(pattern((30, 20), 12), "PNG"))
    at = app("pages/images.py", ws)
    uploader = at.file_uploader(key="upload_files_0")
    uploader.set_value([("one.png", encode(pattern((30, 20), 1), "PNG"), "image/png"),
                        ("<img src=x onerror=alert(1)>.png", encode(pattern((30, 20), 2), "PNG"), "image/png"),
                        ("_x_ [y](http) #1.png", encode(pattern((30, 20), 3), "PNG"), "image/png"),
                        ("set.zip", archive.getvalue(), "application/zip")])
    at.run()
    click(at, "Add uploaded files")
    assert metrics(at)["Usable images"] == "4" and metrics(at)["Skipped"] == "1"
    assert set(ws.images("ok")["rel_path"]) == {"one.png", "_img src=x onerror=alert(1)_.png",  # < > are not valid
                                                "_x_ [y](http) #1.png", "set/zipped/a.png"}
    assert all(Path(p).resolve().is_relative_to(ws.files_dir.resolve()) for p in ws.images("ok")["path"])
    markdown_texts = [c.value for c in at.caption] + [m.value for m in at.markdown]
    assert not any("_x_" in text or "[y](" in text for text in markdown_texts)  # escaped wherever shown


def test_images_page_uploads_a_folder(data):
    ws = create_workspace("folder upload", data)
    at = app("pages/images.py", ws)
    at.file_uploader(key="upload_folder_0").set_value([
        ("line3/a.png", encode(pattern((30, 20), 21), "PNG"), "image/png"),
        ("line3/station 2/b.png", encode(pattern((30, 20), 22), "PNG"), "image/png"),
        ("line3/.DS_Store", b"Bud1", "application/octet-stream")])
    at.run()
    click(at, "Add uploaded folder")
    assert metrics(at)["Usable images"] == "2" and metrics(at)["Skipped"] == "1"
    assert set(ws.images("ok")["rel_path"]) == {"a.png", "station 2/b.png"}
    assert ws.sources()["kind"].tolist() == ["folder"]
    assert at.file_uploader(key="upload_folder_1").value == []  # the uploader starts empty again


# -- vocabulary --------------------------------------------------------------------------------------------
def test_vocabulary_page_edits_are_saved_at_once(data):
    ws = create_workspace("vocab", data)
    at = app("pages/vocabulary.py", ws)
    assert ws.vocab_sets()["name"].tolist() == ["default"]
    assert metrics(at)["Active terms"] == "67,186"

    at.multiselect(key=next(m.key for m in at.multiselect if m.label == "WordNet categories")).select("noun.shape")
    at.run()
    assert ws.load_vocab_set("default")["categories"] == ["noun.shape"]
    shape_count = int(metrics(at)["Active terms"].replace(",", ""))

    text_input(at, "Domain term").input("solder bridge **bold**")
    text_input(at, "Note (optional)").input("tin between two pins")
    click(at, "Add domain term")
    assert ws.load_vocab_set("default")["domain_terms"] == [{"term": "solder bridge **bold**",
                                                              "note": "tin between two pins"}]
    assert metrics(at)["Domain terms"] == "1"

    next(t for t in at.text_area if t.label.startswith("Paste terms")).input("void\ndelamination, layers apart\n")
    click(at, "Add pasted terms")
    assert len(ws.load_vocab_set("default")["domain_terms"]) == 3

    text_input(at, "Search terms (names and definitions)").input("solder bridge")
    at.run()
    editor = at.data_editor[0]
    assert editor.value["name"].tolist() == ["solder bridge **bold**"]
    at.session_state[editor.key] = {"edited_rows": {0: {"on": False}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert ws.load_vocab_set("default")["disabled"] == ["solder bridge **bold**"]
    active = len(vocab_spec.build_vocabulary(ws.load_vocab_set("default")))
    assert shape_count < active <= shape_count + 2  # two new terms on (one may merge with a WordNet noun)
    assert metrics(at)["Active terms"] == f"{active:,}" and metrics(at)["Switched off"] == "1"

    at.radio(key=next(r.key for r in at.radio if r.label == "Prompt templates")).set_value("tac3").run()
    text_input(at, "New set name").input("plant")
    click(at, "Save as new set")
    saved = ws.load_vocab_set("plant")
    assert saved["templates"] == "tac3" and saved == ws.load_vocab_set("default")
    assert at.session_state["vocab_set_name"] == "plant"

    fresh = app("pages/vocabulary.py", ws)  # a refresh (new session) shows what was saved
    assert fresh.selectbox(key="vocab_set_pick").value == "plant"
    assert metrics(fresh)["Switched off"] == "1" and metrics(fresh)["Domain terms"] == "2"


def test_vocabulary_page_explains_a_bad_import(data):
    ws = create_workspace("imports", data)
    at = app("pages/vocabulary.py", ws)
    at.file_uploader(key="vocab_import_0").set_value(("plant terms.csv", b"note\nsomething\n", "text/csv"))
    at.run()
    click(at, "Import terms")
    assert any("plant terms.csv: has a 'note' column but no 'term' column" in e.replace("\\", "")
               for e in messages(at, "error"))
    assert ws.load_vocab_set("default")["domain_terms"] == []


# -- cluster -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cluster_page_starts_a_run_and_opens_it_for_review(images_ws, tiny_choice):
    at = app("pages/cluster.py", images_ws)
    assert any(c.value.startswith("Detected: ") and "CPU with" in c.value for c in at.caption)
    assert at.selectbox(key="w_device").options == list(DEVICES)  # the engine's list, mps included
    k_input = at.number_input(key="w_k")
    assert k_input.max == 24 and k_input.min == 2  # K is limited to the usable images

    text_input(at, "Model").input(tiny_choice["name"])
    text_input(at, "Checkpoint file (optional)").input("/no/such/weights.pt")
    at.run()
    assert any("does not exist" in e for e in messages(at, "error"))
    click(at, "Start run")
    assert any("Fix the problems above" in e for e in messages(at, "error")) and images_ws.runs().empty

    text_input(at, "Checkpoint file (optional)").input(tiny_choice["checkpoint"])
    at.selectbox(key="cluster_vocab_set").set_value("small")
    at.number_input(key="w_k").set_value(3)
    at.radio(key="cluster_layout").set_value("pca")
    at.run()
    click(at, "Start run")
    runs = images_ws.runs()
    assert runs["status"].tolist() == ["done"], runs["error"].tolist()
    params = runs.iloc[0]["params"]
    assert params["n_clusters"] == 3 and params["model"] == tiny_choice and params["vocab_set"] == "small"
    assert run_params.RunParams.from_dict(params).to_dict() == params  # the row is RunParams.to_dict()
    assert at.dataframe[0].value["status"].tolist() == ["done"]
    assert any("Suggested by run 1" in c.value for c in at.caption)  # the first run suggests K for the next
    click(at, "Review this run")  # opens the Review page on this run
    assert at.session_state["run_id"] == int(runs.iloc[0]["id"])
    assert [t.value for t in at.title] == ["Review"]
    assert at.query_params == {"ws": images_ws.path.name, "run": str(runs.iloc[0]["id"])}


def test_cluster_page_saves_the_workspaces_ray_cluster_at_once(images_ws):
    at = app("pages/cluster.py", images_ws)
    ray_input = "Embed on a Ray cluster (optional)"
    assert text_input(at, ray_input).value == ""
    text_input(at, ray_input).input("head node:6379")
    at.run()
    assert any("must be 'local'" in e for e in messages(at, "error")) and images_ws.setting("ray_address") == ""
    text_input(at, ray_input).input(" auto ")
    at.run()
    assert images_ws.setting("ray_address") == "auto" and any("embed on Ray at" in c.value for c in at.caption)
    assert text_input(app("pages/cluster.py", images_ws), ray_input).value == "auto"  # a new session sees it
    text_input(at, ray_input).input("")
    at.run()
    assert images_ws.setting("ray_address") == ""


@pytest.mark.slow
def test_cluster_page_offers_to_run_an_interrupted_run_again(images_ws, tiny_choice):
    params = run_params.RunParams(model=tiny_choice, vocab_set="small", vocab_spec=small_spec(), n_clusters=2,
                              projection="pca", suggest_k=False)
    run_id = images_ws.create_run(params.to_dict(), images_ws.images("ok")["id"].to_numpy())
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    images_ws.set_run_status(run_id, "running", pid=gone.pid)  # its process died: the run is interrupted
    at = app("pages/cluster.py", images_ws)
    assert any("stopped before it finished" in w for w in messages(at, "warning"))
    click(at, "Run again")
    assert images_ws.run(run_id)["status"] == "done"


# -- export ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_export_page_writes_the_verified_rows(images_ws, tiny_choice):
    params = run_params.RunParams(model=tiny_choice, vocab_set="small", vocab_spec=small_spec(), n_clusters=3,
                              projection="pca", suggest_k=False)
    run_id = jobs.start_run(images_ws, params)
    review = ReviewSession(images_ws, run_id)
    sizes = review.clusters().set_index("cluster")["size"]
    cluster = int(sizes.idxmax())
    review.verify_cluster(cluster)
    excluded = int(review.members(cluster)["image_id"].iloc[0])
    review.exclude([excluded])
    expected = int(sizes[cluster]) - 1

    at = app("pages/export.py", images_ws)
    assert metrics(at)["Rows"] == "23"
    at.radio(key="export_rows").set_value("verified").run()
    assert metrics(at)["Rows"] == str(expected) and metrics(at)["Excluded images"] == "1"
    click(at, "Create export")
    assert [d.label for d in at.get("download_button")] == ["Download CSV"]
    [csv_path] = sorted(images_ws.exports_dir.glob("*.csv"))
    frame = pd.read_csv(csv_path, encoding="utf-8-sig")
    assert len(frame) == expected and set(frame["cluster_id"]) == {cluster} and frame["verified"].all()
    assert excluded not in set(images_ws.images().set_index("rel_path").loc[frame["relative_path"], "id"])
    assert (csv_path.with_name(csv_path.stem + "_manifest.json")).exists()


def test_pages_without_a_workspace_point_home(data):
    at = app("pages/cluster.py")
    assert any("Open or create a workspace" in i for i in messages(at, "info"))
    assert [(link.value, link.proto.page) for link in at.get("page_link")] == [("Go to workspaces", "")]
