"""Access in the app (AppTest): the refusal of an exposed server without sign-in, the sign-in pages of ``proxy``
and ``oidc`` mode, roles on the pages, ``?ws=`` tampering, and the local user's name.

AppTest cannot send request headers, so the proxy's header reaches the app through a stand-in for the session's
client (:func:`headers`); the real header over a real connection is ``test_access_browser.py``'s."""
from __future__ import annotations

import types

import numpy as np
import pytest
import streamlit as st
from streamlit import config
from streamlit.runtime import context as st_context

from streamlit.testing.v1 import AppTest

from apptest_helpers import ROOT, elements, open_app
from tac_core.inputs import vocab_spec
from tac_core.inputs.imageset import ImageRecord, ImageSet
from tac_core.workspace.access import Role, User
from tac_core.workspace.workspace import create_workspace, list_workspaces
from ui import identity

SECRET_NAME = "Secret line 7"


@pytest.fixture
def proxy(app_data, monkeypatch):
    """Proxy mode; returns a function that makes the next runs come from ``user`` (None: no header)."""
    monkeypatch.setenv("TAC_STUDIO_AUTH", "proxy")
    monkeypatch.delenv("TAC_STUDIO_PROXY_SECRET", raising=False)
    return lambda user, **more: headers(monkeypatch, {**({"X-Forwarded-User": user} if user else {}), **more})


def headers(monkeypatch, values: dict) -> None:
    client = types.SimpleNamespace(headers=list(values.items()), cookies={}, remote_ip=None)
    monkeypatch.setattr(st_context, "_get_client_context", lambda: client)


@pytest.fixture
def shared(app_data):
    """Two workspaces: "Line 9 cells" (ada admin, carl reviewer, bob viewer, a done run) and ada's secret one."""
    line = create_workspace("Line 9 cells", app_data, creator=User("ada"))
    line.add_member("carl", "reviewer")
    line.add_member("bob", Role.VIEWER)
    records = tuple(ImageRecord(f"/src/{i}.png", f"{i}.png", f"{i:064x}", 10, 4, 4, "ok", "") for i in range(6))
    ids = np.array(line.add_image_set(ImageSet("/src", records), "upload", "six").image_ids)
    run_id = line.create_run({"n_clusters": 2, "mode": "free"}, ids)
    line.save_run_result(run_id, ids, np.array([0, 0, 0, 1, 1, 1]), np.linspace(0.5, 1, 6),
                         [[("crack", 0.3)], [("stain", 0.2)]])
    secret = create_workspace(SECRET_NAME, app_data, creator=User("ada"))
    yield line, secret
    line.close()
    secret.close()


def texts(at) -> str:
    """Every string the last run drew (labels, values, options, body text), joined."""
    found = []
    for node in elements(at):
        proto = getattr(node, "proto", None)
        if proto is not None:
            found.append(str(proto))
        for attr in ("value", "label", "body"):
            value = getattr(node, attr, None)
            if isinstance(value, str):
                found.append(value)
    return "\n".join(found)


def plain(text: str) -> str:
    """Markdown-escaped text (``ui.safe_text.esc``) as it reads on the page."""
    return text.replace("\\", "")


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


# -- a server that must serve nobody ----------------------------------------------------------------------
def test_exposed_without_sign_in_the_app_shows_only_the_setting_to_add(shared, monkeypatch):
    monkeypatch.delenv("TAC_STUDIO_AUTH", raising=False)
    config.set_option("server.address", "0.0.0.0")
    try:
        at = open_app("pages/review.py", workspace=shared[0], run_id=1)
    finally:
        config.set_option("server.address", "127.0.0.1")
    assert [t.value for t in at.title] == ["TAC Studio is not available"]
    assert "Add the setting TAC_STUDIO_AUTH=proxy or TAC_STUDIO_AUTH=oidc" in plain(at.error[0].value)
    drawn = texts(at)
    assert "Line 9 cells" not in drawn and SECRET_NAME not in drawn and not at.sidebar.children
    assert identity.is_loopback("127.0.0.1") and identity.is_loopback("::1") and identity.is_loopback("localhost")
    assert not any(identity.is_loopback(a) for a in ("", "0.0.0.0", "::", "192.168.1.5", "plant-server"))


def test_a_bad_auth_setting_is_a_refusal_too(shared, monkeypatch):
    monkeypatch.setenv("TAC_STUDIO_AUTH", "ldap")
    at = open_app()
    assert "TAC_STUDIO_AUTH='ldap' is not one of local, proxy, oidc" in plain(at.error[0].value)
    assert "Line 9 cells" not in texts(at)


# -- proxy mode ----------------------------------------------------------------------------------------------
def test_without_the_proxy_header_every_address_shows_only_sign_in(shared, proxy):
    proxy(None)
    for page, kwargs in ((None, {}), ("pages/review.py", {"workspace": shared[0], "run_id": 1}),
                         ("pages/images.py", {"workspace": shared[1]})):
        at = open_app(page, **kwargs)
        assert [t.value for t in at.title] == ["Sign-in required"]
        drawn = texts(at)
        assert "Line 9 cells" not in drawn and SECRET_NAME not in drawn and shared[0].path.name not in drawn
        assert not at.get("imgs") and not at.dataframe and not at.sidebar.children


def test_a_header_sent_twice_or_without_the_proxy_secret_signs_nobody_in(shared, proxy, monkeypatch):
    monkeypatch.setattr(st_context, "_get_client_context", lambda: types.SimpleNamespace(
        headers=[("X-Forwarded-User", "eve"), ("x-forwarded-user", "ada")], cookies={}, remote_ip=None))
    assert [t.value for t in open_app().title] == ["Sign-in required"]
    monkeypatch.setenv("TAC_STUDIO_PROXY_SECRET", "s3cret-from-the-proxy")
    proxy("ada")
    assert [t.value for t in open_app().title] == ["Sign-in required"]
    proxy("ada", **{"X-Tac-Studio-Proxy-Secret": "guess"})
    assert [t.value for t in open_app().title] == ["Sign-in required"]
    proxy("ada", **{"X-Tac-Studio-Proxy-Secret": "s3cret-from-the-proxy"})
    assert [t.value for t in open_app().title] == ["TAC Studio"]
    proxy("ada\x07admin", **{"X-Tac-Studio-Proxy-Secret": "s3cret-from-the-proxy"})
    assert [t.value for t in open_app().title] == ["Sign-in required"]


def test_a_viewer_sees_the_review_read_only_and_a_click_changes_nothing(shared, proxy):
    line, _ = shared
    proxy("bob")
    at = open_app("pages/review.py", workspace=line, run_id=1)
    assert any(plain(i.value).startswith("Read only: bob is a viewer of this workspace; to edit the review they need "
                                         "the reviewer role") for i in at.info)
    for label in ("Rename cluster", "Verify cluster", "Split automatically", "Undo", "Redo"):
        assert button(at, label).disabled, label
    assert at.text_input(key="review_new_name").disabled
    assert line.connection().execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    assert "your role: viewer" in texts(at)


def test_a_reviewer_edits_and_the_history_shows_their_name(shared, proxy):
    line, _ = shared
    proxy("carl", **{"X-Forwarded-Email": "carl@plant.example"})
    at = open_app("pages/review.py", workspace=line, run_id=1)
    assert not any(i.value.startswith("Read only") for i in at.info)
    at.text_input(key="review_new_name").set_value("cracks")
    button(at, "Rename cluster").click().run()
    assert not at.exception
    at.session_state["review_history"] = True  # open the toolbar's "History" popover
    at.run()
    history = next(df.value for df in at.dataframe if "User" in df.value.columns)
    assert history["User"].tolist() == ["carl"] and history["Action"].iloc[0].endswith("to 'cracks'")
    row = line.connection().execute("SELECT user_name, user_email FROM events").fetchone()
    assert row == ("carl", "")  # TAC_STUDIO_EMAIL_HEADER is not set: no e-mail is taken from the request


def test_the_email_header_is_read_only_when_named(shared, proxy, monkeypatch):
    monkeypatch.setenv("TAC_STUDIO_EMAIL_HEADER", "X-Forwarded-Email")
    proxy("carl", **{"X-Forwarded-Email": "carl@plant.example"})
    at = open_app()
    assert "carl <carl@plant.example>" in [t.value for t in at.sidebar.text]


def test_a_non_member_sees_no_trace_and_tampering_with_the_address_is_refused(shared, proxy, app_data):
    line, secret = shared
    proxy("eve")
    at = open_app()
    assert "No workspaces yet" in texts(at) and "Line 9 cells" not in texts(at)
    assert str(app_data) not in texts(at)  # the server's folders are not shown when users sign in
    for folder in (secret.path.name, line.path.name, "..", ".", ".creating-x", "no-such-folder"):
        at = open_app("pages/review.py")
        at.query_params["ws"] = folder
        at.run()
        drawn = texts(at)
        assert "There is no workspace at this address that you may open." in plain(drawn), folder
        assert SECRET_NAME not in drawn and "Line 9 cells" not in drawn and str(app_data) not in drawn
    proxy("bob")  # a member of Line 9 cells only
    at = open_app("pages/export.py", workspace=secret)
    assert "There is no workspace at this address that you may open." in plain(texts(at))
    assert SECRET_NAME not in texts(at)
    assert [i.name for i in list_workspaces(app_data, user=User("bob"))] == ["Line 9 cells"]


def test_a_viewer_cannot_add_images_and_a_reviewer_cannot_add_a_server_folder(shared, proxy):
    line, _ = shared
    proxy("bob")
    at = open_app("pages/images.py", workspace=line)
    assert any("to add images they need the reviewer role" in plain(i.value) for i in at.info)
    assert not any(b.label == "Add uploaded files" for b in at.button)
    proxy("carl")
    at = open_app("pages/images.py", workspace=line)
    assert not button(at, "Add uploaded files").disabled
    assert button(at, "Add folder").disabled and at.text_input(key="images_folder_path").disabled


# -- oidc mode -----------------------------------------------------------------------------------------------
def test_oidc_mode_calls_st_login_when_nobody_is_logged_in(shared, app_data, monkeypatch):
    monkeypatch.setenv("TAC_STUDIO_AUTH", "oidc")
    calls = []
    monkeypatch.setattr(st, "login", lambda *args: calls.append(args))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.user = {"is_logged_in": False}
    at.run()
    assert calls == [()]  # straight to the provider
    assert [t.value for t in at.title] == ["Sign-in required"] and "Line 9 cells" not in texts(at)
    button(at, "Sign in").click().run()
    assert calls == [(), ()]
    at.user = {"is_logged_in": True, "email": "ada", "email_verified": False}
    at.run()
    assert [t.value for t in at.title] == ["Sign-in required"]  # an unverified e-mail names nobody
    at.user = {"is_logged_in": True, "email": "ada", "email_verified": True, "name": "Ada L."}
    at.run()
    assert [t.value for t in at.title] == ["TAC Studio"] and "Line 9 cells" in texts(at) and SECRET_NAME in texts(at)
    assert any(b.label == "Sign out" for b in at.sidebar.button)


# -- local mode ----------------------------------------------------------------------------------------------
def test_local_mode_asks_the_name_once_and_records_it(app_data, monkeypatch):
    monkeypatch.delenv("TAC_STUDIO_AUTH", raising=False)
    at = open_app()
    assert at.sidebar.expander[0].label == "Your name: recorded with every decision"
    at.sidebar.text_input[0].set_value("Grace H.")
    at.sidebar.button[0].click().run()
    next(t for t in at.text_input if t.label == "Workspace name").set_value("Grace's line")
    next(b for b in at.button if b.label == "Create workspace").click().run()
    assert not at.exception
    [info] = list_workspaces(app_data, user=User("grace h."))
    assert info.role == "admin"
    at = open_app()
    assert at.sidebar.expander[0].label == "Not you?"  # asked once


def test_a_viewer_sees_the_vocabulary_read_only_and_no_server_path_inputs(shared, proxy):
    line, _ = shared
    proxy("bob")
    at = open_app("pages/vocabulary.py", workspace=line)
    assert "no vocabulary set yet" in texts(at) and not line.vocab_sets().shape[0]  # a viewer creates none
    vocab_spec.ensure_default_set(line.as_user(User("carl")))
    at = open_app("pages/vocabulary.py", workspace=line)
    assert any("to change vocabulary sets they need the reviewer role" in plain(i.value) for i in at.info)
    assert at.toggle[0].disabled and button(at, "Add domain term").disabled and button(at, "Save as new set").disabled
    assert not [t for t in at.text_input if t.label in ("Model", "Checkpoint file (optional)")]
    proxy("carl")
    at = open_app("pages/vocabulary.py", workspace=line)
    assert not at.toggle[0].disabled and [t for t in at.text_input if t.label == "Model"]
