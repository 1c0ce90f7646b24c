"""Hardening, hostile content: names, terms, labels and file names holding HTML, script or Markdown are shown as
typed on every page and never rendered; uploads and server folders cannot reach outside what is allowed; the
upload limits are configured. The table of cases is in docs/HARDENING.md.

Every page is opened with Streamlit's AppTest on a workspace whose every user-typed text is hostile. The check
is deny-by-default: a hostile string may only appear in elements Streamlit shows as plain text (``st.text``,
``st.code``, ``st.json``, select options, typed input values, dataframe cells); anywhere else (Markdown,
captions, alerts, headings, widget labels and help, expander and tab labels, progress text, image captions,
metrics, toasts) it must arrive escaped, and no element may allow raw HTML.
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import elements, map_payload, open_app
from ui import map_canvas, size_bars
from bad_inputs import encode, pattern
from review_workspace import planted_arrays
from tac_core.workspace import ingest
from tac_core.inputs import vocab_spec
from tac_core.errors import InvalidInputError
from tac_core.workspace.workspace import create_workspace

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = ("<img src=x onerror=alert(1)>", "**bold**", "[link](javascript:alert(1))", ":red[x]", "$x$")
EVIL = " ".join(PAYLOADS)
WORKSPACE_NAME = f"WS {EVIL}"
SET_NAME = f"SET {EVIL}"
TERM = f"TERM {EVIL}"
CLUSTER_NAME = f"CL {EVIL}"
FILE_NAME = f"FILE {EVIL}.png"
SKIPPED_NAME = f"SKIP {EVIL}.txt"
#: Where each hostile text must be visible, verbatim, in a plain-text element of each page (``pages/<name>.py``).
VERBATIM = {"workspaces": [WORKSPACE_NAME], "images": [WORKSPACE_NAME, SKIPPED_NAME],
            "vocabulary": [WORKSPACE_NAME, SET_NAME, TERM], "cluster": [WORKSPACE_NAME, SET_NAME],
            "review": [WORKSPACE_NAME, CLUSTER_NAME],  # file names: cut in the middle under thumbnails
            "audit": [WORKSPACE_NAME, CLUSTER_NAME, FILE_NAME],
            "export": [WORKSPACE_NAME, CLUSTER_NAME, FILE_NAME], "history": [WORKSPACE_NAME, CLUSTER_NAME]}
#: Proto fields Streamlit shows as plain text (or never shows: ids, urls); everything else may render Markdown.
PLAIN_FIELDS = {("Text", "body"), ("Code", "code_text"), ("Json", "body"), ("Selectbox", "options"),
                ("Selectbox", "raw_value"), ("MultiSelect", "options"), ("MultiSelect", "raw_values"),
                ("TextInput", "value"), ("TextInput", "default"), ("TextArea", "value"), ("TextArea", "default"),
                ("BidiComponent", "json")}  # the app's components write their data as text (checked below)
UNSHOWN_FIELDS = {"id", "form_id", "query_param_key", "url", "page", "page_script_hash", "deferred_file_id",
                  "element_id"}


# -- the workspace ---------------------------------------------------------------------------------------
@pytest.fixture
def hostile(tmp_path, app_data, elpv_images):
    """A workspace where every user text is hostile: its name, a vocabulary set and a domain term, file names
    (usable, duplicate and skipped), and a finished run with a hostile cluster name and anchor term."""
    folder = tmp_path / "share"
    folder.mkdir()
    for path in sorted(elpv_images.iterdir())[:8]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / FILE_NAME).write_bytes(encode(pattern((40, 30), 301), "PNG"))
    (folder / f"zz {FILE_NAME}").write_bytes(encode(pattern((40, 30), 301), "PNG"))  # a duplicate of it
    (folder / SKIPPED_NAME).write_text("not an image")
    ws = create_workspace(WORKSPACE_NAME, app_data)
    report = ingest.add_folder(ws, folder)
    assert (report.added, report.duplicates, report.skipped) == (9, 1, 1)
    spec = {**vocab_spec.default_spec(), "wordnet": False, "domain_terms": [{"term": TERM, "note": EVIL}]}
    ws.save_vocab_set(SET_NAME, spec)
    ids = np.array(report.image_ids, np.int64)
    labels = np.arange(len(ids)) % 3
    run_id = ws.create_run({"n_clusters": 3, "mode": "free", "vocab_set": SET_NAME, "vocab_spec": spec,
                            "model": {"name": EVIL}}, ids)
    arrays = planted_arrays(labels, np.array([1]))
    ws.save_run_result(run_id, ids, labels, arrays["confidence"], [[(TERM, 0.31)], [(TERM, 0.2)], [("crack", 0.3)]],
                       arrays=arrays, cluster_names=[CLUSTER_NAME, "plain", f"={EVIL}"])
    yield ws, run_id
    ws.close()


def open_page(name: str, ws, run_id: int) -> AppTest:
    """The page as a browser reaches it: the app opened on the workspace and run, then the page."""
    return open_app(f"pages/{name}.py", ws, run_id)


# -- reading what a page sends to the browser -------------------------------------------------------------
def proto_strings(message, path=()):
    """(field path, text) of every string in a protobuf message, nested messages included."""
    for field, value in message.ListFields():
        values = value if field.is_repeated else [value]
        for item in values:
            if field.type == field.TYPE_STRING:
                yield path + (field.name,), item
            elif field.type == field.TYPE_MESSAGE:
                yield from proto_strings(item, path + (field.name,))


def sent(at: AppTest):
    """(proto name, field path, text) of every string the page sent, and every dataframe cell as ("cell", (), text).

    AppTest's nodes hold each element's own proto ("Markdown", "Alert", "Expandable", "BidiComponent" …)."""
    for node in elements(at):
        proto = getattr(node, "proto", None)
        if proto is None or not hasattr(proto, "ListFields"):
            continue
        name = proto.DESCRIPTOR.name
        yield from ((name, path, text) for path, text in proto_strings(proto))
        if name in ("Dataframe", "Table", "Arrow"):
            frame = node.value
            for column in frame.columns:
                yield "cell", (), str(column)
                yield from (("cell", (), str(cell)) for cell in frame[column].tolist())


def rendered_hostile(at: AppTest) -> list[tuple[str, tuple, str]]:
    """Strings that carry a raw payload in a place that renders Markdown or HTML."""
    found = []
    for kind, path, text in sent(at):
        if kind == "cell" or path[-1] in UNSHOWN_FIELDS or (kind, path[-1]) in PLAIN_FIELDS:
            continue
        if any(payload in text for payload in PAYLOADS):
            found.append((kind, path, text))
    return found


def test_the_review_map_writes_user_text_as_text(hostile):
    """The map's legend and hover and the size bars' tooltips get user text (cluster names, file names) as data
    and put it on the page as text only: their scripts have no way to turn a string into markup."""
    ws, run_id = hostile
    at = open_page("review", ws, run_id)
    payload = map_payload(at)
    assert payload.header["groups"][0]["label"].startswith("0 · CL <img src=x onerror=alert(1)>")  # as typed
    assert any(text.startswith("FILE <img src=x onerror=alert(1)>") for text in payload.hover)
    scripts = ((ROOT / "ui" / "map_canvas.js").read_text(encoding="utf-8"), size_bars.JS, map_canvas.TEXTS_JS)
    for script in scripts:
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "DOMParser",
                     "createContextualFragment", "eval(", "Function("):
            assert sink not in script, sink
    assert all("textContent" in script for script in scripts[:2])  # the texts' script only keeps them
    bars = json.loads(next(c for c in at.get("bidi_component")
                           if c.proto.component_name == "tac_studio.cluster_sizes").proto.json)["bars"]
    assert CLUSTER_NAME in [bar["name"] for bar in bars]  # whole, as data


def plain_texts(at: AppTest) -> list[str]:
    return [text for kind, path, text in sent(at) if kind == "cell" or (kind, path[-1]) in PLAIN_FIELDS]


# -- every page -------------------------------------------------------------------------------------------
def test_every_page_is_checked():
    assert sorted(VERBATIM) == sorted(path.stem for path in (ROOT / "pages").glob("*.py"))


@pytest.mark.parametrize("page", list(VERBATIM))
def test_hostile_text_is_shown_verbatim_and_never_rendered(hostile, page):
    ws, run_id = hostile
    at = open_page(page, ws, run_id)
    assert rendered_hostile(at) == []
    protos = [node.proto for node in elements(at) if hasattr(getattr(node, "proto", None), "DESCRIPTOR")]
    names = {proto.DESCRIPTOR.name for proto in protos}
    assert not names & {"Html", "IFrame", "ComponentInstance"}, names  # no raw HTML element
    components = {p.component_name for p in protos if p.DESCRIPTOR.name == "BidiComponent"}
    assert components <= {"tac_studio.review_map", "tac_studio.review_map_texts", "tac_studio.cluster_sizes"}, \
        components  # the app's own: they write text as text
    assert not [p.body for p in protos if p.DESCRIPTOR.name == "Markdown" and p.allow_html]
    plain = plain_texts(at)
    for text in VERBATIM[page]:
        assert any(text in shown for shown in plain), (page, text)


def test_escaped_text_reads_as_typed_in_alerts(hostile):
    """An error naming a hostile value is escaped for Markdown, and reads as the value once rendered."""
    ws, run_id = hostile
    at = open_page("workspaces", ws, run_id)
    next(t for t in at.text_input if t.label == "Workspace name").input(WORKSPACE_NAME)
    next(b for b in at.button if b.label == "Create workspace").click()
    at.run()
    errors = [e.value for e in at.error]
    assert errors and "already exists" in errors[0]
    assert rendered_hostile(at) == []
    unescaped = errors[0].replace("\\", "")  # what Markdown shows: each backslash escape gives its character
    assert WORKSPACE_NAME in unescaped


def test_the_ui_never_opts_into_raw_html():
    """No page or view passes user text to st.html, components or unsafe_allow_html (a grep of the code). The one
    component, the Review map (``ui/map_canvas.py``), has fixed HTML and gets user text only as data, which its
    script writes as text (:func:`test_the_review_map_writes_user_text_as_text`)."""
    sources = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")),
               *sorted(p for p in (ROOT / "ui").glob("*.py") if p.name not in ("map_canvas.py", "size_bars.py"))]
    offenders = [f"{path.name}: {line.strip()}" for path in sources
                 for line in path.read_text(encoding="utf-8").splitlines()
                 if any(word in line for word in ("unsafe_allow_html", "st.html", "components.html",
                                                  "components.iframe", "st.components"))]
    assert offenders == []


# -- uploads, server folders, limits ----------------------------------------------------------------------
def all_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def test_uploaded_names_never_write_outside_the_workspace(tmp_path):
    ws = create_workspace("uploads", tmp_path / "data")
    refused = ["../../escape.png", "..\\..\\escape2.png", "/etc/cron.d/evil.png", "C:\\Windows\\evil.png",
               "a/../../b.png", "a/./../../../c.png", ".git/config", "__MACOSX/._a.png", "", "./"]
    kept = ["nul\x00byte.png", "%2e%2e/encoded.png", "x" * 300 + ".png", "CON.png", "<script>alert(1)</script>.png",
            "tab\tname.png", "folder/ok.png"]
    uploads = [(name, encode(pattern((20, 20), 310 + i), "PNG")) for i, name in enumerate(refused + kept)]
    outside_before = all_files(tmp_path) - all_files(ws.path)
    report = ingest.add_uploads(ws, uploads)
    assert all_files(tmp_path) - all_files(ws.path) == outside_before  # nothing written anywhere else
    [upload_dir] = [p for p in ws.files_dir.iterdir()]
    written = all_files(ws.files_dir)
    assert len(written) == len(kept)
    for path in written:
        assert path.resolve().is_relative_to(upload_dir.resolve()) and len(path.name.encode()) <= 255
    images = ws.images()
    assert report.files == len(images) == len(refused) + len(kept)
    assert (report.added, report.skipped) == (len(kept), len(refused))
    reasons = dict(zip(images["rel_path"], images["reason"]))
    for name in refused:
        assert any(word in reasons[name.replace("\\", "/")] for word in (
            "leaves the folder", "absolute path", "hidden or system", "empty name")), name
    ok = set(images.loc[images["status"] == "ok", "rel_path"])
    assert {"nulbyte.png", "%2e%2e/encoded.png", "_CON.png", "tab_name.png", "folder/ok.png"} <= ok
    assert "x" * 251 + ".png" in ok  # cut to 255 bytes, extension kept
    ws.close()


def test_server_folders_are_restricted_to_the_allowed_roots_on_the_page(tmp_path, monkeypatch, app_data):
    allowed, outside = tmp_path / "plant", tmp_path / "elsewhere"
    (allowed / "line3").mkdir(parents=True)
    outside.mkdir()
    (allowed / "line3" / "a.png").write_bytes(encode(pattern((20, 20), 320), "PNG"))
    (outside / "b.png").write_bytes(encode(pattern((20, 20), 321), "PNG"))
    (allowed / "link_out").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv(ingest.ALLOWED_ROOTS_ENV, str(allowed))
    ws = create_workspace("roots", app_data)
    at = open_app("pages/images.py", ws, timeout=60)
    assert any(str(allowed.resolve()) in c.value.replace("\\", "") for c in at.caption)
    for path, added in ((outside, False), (allowed / "link_out", False), (allowed / ".." / "elsewhere", False),
                        (allowed / "line3", True)):
        at.text_input(key="images_folder_path").input(str(path))
        next(b for b in at.button if b.label == "Add folder").click()
        at.run()
        assert not at.exception, at.exception
        errors = [e.value.replace("\\", "") for e in at.error]
        assert bool(errors) != added, (path, errors)
        if errors:
            assert "outside the folders this server allows" in errors[0] and ingest.ALLOWED_ROOTS_ENV in errors[0]
    assert ws.image_counts()["ok"] == 1 and len(ws.sources()) == 1
    with pytest.raises(InvalidInputError, match="outside the folders"):
        ingest.add_folder(ws, "/")
    ws.close()


def test_upload_and_zip_limits_are_configured_and_documented():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    limit_mb = config["server"]["maxUploadSize"]
    assert isinstance(limit_mb, int) and 0 < limit_mb <= 16 * 1024
    assert config["client"]["showErrorDetails"] == "none"  # no traceback reaches a browser
    from tac_core.inputs.zips import DEFAULT_ZIP_MAX_BYTES, DEFAULT_ZIP_MAX_FILES, ZIP_MAX_RATIO

    doc = (ROOT / "docs" / "HARDENING.md").read_text(encoding="utf-8")
    assert "maxUploadSize" in doc and f"{limit_mb}" in doc
    assert f"{DEFAULT_ZIP_MAX_FILES:,}" in doc and f"{ZIP_MAX_RATIO}:1" in doc
    assert f"{DEFAULT_ZIP_MAX_BYTES // 1024 ** 3} GB" in doc
    assert ingest.ALLOWED_ROOTS_ENV in doc
