"""Sign-off and history in the app (AppTest): approving and withdrawing on the Review page (an event each, shown in
the cluster list), an edit withdrawing the approval visibly, the two-person rule switched on the History page
and refusing the last editor with the reason on the button, the History page's filters, and the Export page's
"Approved clusters only"."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from apptest_helpers import open_app
from review_workspace import real_workspace
from tac_core.workspace.access import Role, User
from tac_core.workspace.review import ReviewSession
from test_review_page import release_app_caches
from ui.safe_text import esc


@pytest.fixture
def workspace(tmp_path, monkeypatch, elpv_images):
    root = tmp_path / "data"
    monkeypatch.setenv("TAC_STUDIO_DATA", str(root))
    monkeypatch.delenv("TAC_STUDIO_AUTH", raising=False)
    ws, run_id, ids = real_workspace(root, elpv_images)  # clusters 0, 1, 2 of 9, 8, 7; the app's user is its admin
    yield ws, run_id, ids
    ws.close()
    release_app_caches()


def run(at):
    at.run()
    assert not at.exception, at.exception
    assert not [e.value for e in at.error], [e.value for e in at.error]
    return at


def kinds(ws, run_id) -> list[tuple[str, dict]]:
    rows = ws.connection().execute("SELECT kind, payload FROM events WHERE run_id = ? ORDER BY id", (run_id,))
    return [(kind, json.loads(payload)) for kind, payload in rows]


def captions(at) -> list[str]:
    """The captions as the user reads them (their Markdown escapes taken out)."""
    return [re.sub(r"\\(.)", r"\1", c.value) for c in at.caption]


def table_with(at, column: str) -> pd.DataFrame:
    return next(df.value for df in at.dataframe if column in df.value.columns)


def test_approve_withdraw_and_an_edit_withdrawing_on_the_review_page(workspace):
    ws, run_id, _ = workspace
    user = ws.user.name
    at = open_app("pages/review.py", ws, run_id, timeout=60)
    assert "Not approved" in captions(at) and at.button(key="sign_off_approve").label == "Approve cluster"
    at.button(key="sign_off_approve").click()
    run(at)
    assert kinds(ws, run_id) == [("approve", {"cluster": 0})]
    assert [s.value for s in at.success] == [esc("Approved cluster 0 'cluster 0'.")]
    assert any(c.startswith(f"Approved by {user} on ") and c.endswith("UTC (#1)") for c in captions(at))
    approved = table_with(at, "Approved").set_index("ID")["Approved"]
    assert approved[0].startswith(f"{user} · ") and approved[1] == approved[2] == ""

    at.text_input(key="review_new_name").input("cracks")
    at.button(key="review_rename").click()
    run(at)  # a later edit: the approval goes, and the page says which edit took it and why
    assert any(c.startswith(f"Not approved: the approval by {user} (#1) was withdrawn by {user} on ")
               and c.endswith("(#2): renamed cluster 0 from 'cluster 0' to 'cracks'") for c in captions(at))
    assert table_with(at, "Approved").set_index("ID")["Approved"][0] == ""

    at.button(key="sign_off_approve").click()
    run(at)
    at.text_input(key="sign_off_reason").input("mixed with stains")
    at.button(key="sign_off_withdraw").click()
    run(at)
    assert kinds(ws, run_id)[-1] == ("withdraw", {"cluster": 0, "reason": "mixed with stains"})
    assert any(c.endswith("(#4): mixed with stains") and c.startswith("Not approved: the approval by")
               for c in captions(at))
    assert at.button(key="sign_off_approve").label == "Approve cluster"


def test_the_two_person_rule_refuses_the_last_editor_with_the_reason_on_the_button(workspace):
    ws, run_id, _ = workspace
    ws.add_member("Dora", Role.APPROVER)
    history = open_app("pages/history.py", ws, run_id, timeout=60)
    toggle = history.toggle(key=f"sign_off_rule_{ws.path.name}")
    assert toggle.value is False and not toggle.disabled
    toggle.set_value(True)
    run(history)
    assert ws.setting("two_person_rule") == "on"
    assert [s.value for s in history.success] == [esc("The two-person rule is on in this workspace.")]

    ReviewSession(ws, run_id).rename(0, "cracks")  # the app's user (the admin) makes the last edit of cluster 0
    at = open_app("pages/review.py", ws, run_id, timeout=60)
    button = at.button(key="sign_off_approve")
    assert button.disabled and "two\\-person rule is on" in button.help
    ReviewSession(ws.as_user(User("Dora")), run_id).approve(0)  # another approver may
    run(at)
    assert any(c.startswith("Approved by Dora on ") for c in captions(at))


def test_the_history_page_lists_filters_and_offers_the_events(workspace):
    ws, run_id, ids = workspace
    ws.add_member("Dora", Role.APPROVER)
    ws.add_member("carl", Role.REVIEWER)
    mine, dora, carl = (ReviewSession(ws.as_user(u), run_id) for u in (ws.user, User("Dora"), User("carl")))
    mine.rename(2, "stains")
    dora.approve(2)
    carl.move(ids[[0]], 2)  # withdraws the approval of cluster 2
    carl.undo()  # and brings it back
    dora.refresh()
    dora.approve(1)

    at = open_app("pages/history.py", ws, run_id, timeout=60)
    sign_off = table_with(at, "Approved by").set_index("ID")
    assert sign_off.loc[2, "Approved by"] == "Dora" and sign_off.loc[2, "Approval"] == "#2"
    assert sign_off.loc[[0, 1, 2], "Approved"].tolist() == [False, True, True]
    assert any(c.startswith("2 of 3 clusters approved.") for c in captions(at))
    events = table_with(at, "What happened")
    assert events["#"].tolist() == [5, 4, 3, 2, 1]  # newest first
    assert events["User"].tolist() == ["Dora", "carl", "carl", "Dora", ws.user.name]
    assert events["Undone"].tolist() == [False, False, True, False, False]
    assert "this withdrew the approval of cluster 2 'stains'" in events.set_index("#").loc[3, "What happened"]
    assert [d.label for d in at.get("download_button")] == ["Download history CSV"]

    at.multiselect(key="history_users").select("carl")
    run(at)
    assert table_with(at, "What happened")["#"].tolist() == [4, 3]
    at.multiselect(key="history_users").unselect("carl")
    at.multiselect(key="history_actions").select("approve")
    at.multiselect(key="history_clusters").select(1)
    run(at)
    assert table_with(at, "What happened")["#"].tolist() == [5]
    assert "1 of 5 events." in " ".join(captions(at))


def test_the_export_page_exports_only_approved_clusters_when_asked(workspace):
    ws, run_id, _ = workspace
    ReviewSession(ws, run_id).approve(1)
    at = open_app("pages/export.py", ws, run_id, timeout=60)
    box = at.checkbox(key="export_approved_only")
    assert box.label == "Approved clusters only (1 of 3 approved)"
    box.check()
    run(at)
    assert next(m.value for m in at.metric if m.label == "Rows") == "8"  # cluster 1 only
    next(b for b in at.button if b.label == "Create export").click()
    run(at)
    [manifest] = [json.loads(p.read_text()) for p in ws.exports_dir.glob("*_manifest.json")]
    assert manifest["approved_only"] is True and manifest["counts"]["rows"] == 8
    assert [(a["cluster"], a["approved_by"]) for a in manifest["approvals"]] == [(1, ws.user.name)]
    next(b for b in at.button if b.label == "Create bundle").click()
    run(at)
    [bundle] = ws.exports_dir.glob("bundle_run1_*.zip")
    assert bundle.is_file()
