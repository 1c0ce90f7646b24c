"""Cluster sign-off in the engine: who may approve, the two-person rule, every kind of later edit withdrawing an
approval (and undo bringing it back), withdrawals by hand, the history with users and undone events, and exports
restricted to approved clusters whose manifest lists the approvals and verifies."""
from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest

from tac_core.errors import InvalidInputError
from tac_core.inputs.imageset import ImageRecord, ImageSet
from tac_core.workspace.access import AccessDeniedError, User
from tac_core.workspace.bundle import BundleOptions, write_bundle
from tac_core.workspace.export import export_labels, history_csv
from tac_core.workspace.manifest import verify_bundle
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.review_log import events_table
from tac_core.workspace.sign_off import TWO_PERSON_RULE, approvals_table
from tac_core.workspace.workspace import create_workspace

ADA = User("ada", "ada@plant.example")  # admin (created the workspace)
BOB = User("bob")  # viewer
CARL = User("carl")  # reviewer
DORA = User("Dora", "dora@plant.example")  # approver
ERIN = User("erin")  # approver


@pytest.fixture(autouse=True)
def local_mode(monkeypatch):
    monkeypatch.delenv("TAC_STUDIO_AUTH", raising=False)


@pytest.fixture
def ws(tmp_path):
    """ada's workspace (bob viewer, carl reviewer, Dora and erin approvers) with one done run of 9 images in three
    clusters: positions 0-2 in cluster 0, 3-5 in cluster 1, 6-8 in cluster 2."""
    workspace = with_run(create_workspace("sign-off", tmp_path / "data", creator=ADA))
    for name, role in (("bob", "viewer"), ("carl", "reviewer"), ("Dora", "approver"), ("erin", "approver")):
        workspace.add_member(name, role)
    yield workspace
    workspace.close()


def with_run(workspace):
    """The workspace with nine image records and one done run of them in clusters 0, 1, 2 (three each)."""
    records = tuple(ImageRecord(f"/src/{i}.png", f"{i}.png", f"{i:064x}", 10, 4, 4, "ok", "") for i in range(9))
    ids = np.array(workspace.add_image_set(ImageSet("/src", records), "upload", "nine files").image_ids)
    run_id = workspace.create_run({"n_clusters": 3}, ids)
    workspace.save_run_result(run_id, ids, np.repeat([0, 1, 2], 3), np.linspace(0.5, 1, 9),
                              [[("crack", 0.3)], [("stain", 0.2)], [("scratch", 0.25)]])
    workspace.run_id, workspace.ids = run_id, ids
    return workspace


def session(ws, user: User) -> ReviewSession:
    return ReviewSession(ws.as_user(user, session=f"browser-{user.name}"), ws.run_id)


def approved(s: ReviewSession) -> dict[int, str]:
    s.refresh()
    return {c: a.stamp.user for c, a in s.state.sign_offs.approved.items()}


# -- who may approve, and the two-person rule --------------------------------------------------------------
def test_an_approver_approves_a_cluster_and_nobody_below_may(ws):
    for user, role in ((BOB, "viewer"), (CARL, "reviewer")):
        with pytest.raises(AccessDeniedError, match=f"is a {role} of this workspace; to sign off clusters they need "
                                                    "the approver role"):
            session(ws, user).approve(0)
        assert session(ws, user).sign_off_refusal(0).startswith(f"{user.name} is a {role}")
    dora = session(ws, DORA)
    assert dora.sign_off_refusal(0) == ""
    edit = dora.approve(0)
    assert (edit.kind, edit.text, edit.cluster) == ("approve", "approved cluster 0 'cluster 0'", 0)
    assert approved(dora) == {0: "Dora"}
    with pytest.raises(InvalidInputError, match=r"cluster 0 'cluster 0' is approved already \(approved by Dora, #1 "):
        session(ws, ERIN).approve(0)
    row = approvals_table(dora.state).set_index("cluster").loc[0]
    assert (row["approved"], row["approved_by"], row["approved_email"], row["approval_event"]) == (
        True, "Dora", "dora@plant.example", edit.event_id)
    assert row["approved_at"].endswith("+00:00") and row["withdrawn_by"] == ""
    assert ws.connection().execute("SELECT kind, payload, user_name FROM events").fetchall() == [
        ("approve", '{"cluster": 0}', "Dora")]
    assert approved(ReviewSession(ws, ws.run_id)) == {0: "Dora"}  # replayed from the log


def test_the_two_person_rule_refuses_the_last_editor_and_accepts_another_approver(ws):
    with pytest.raises(AccessDeniedError, match="change the workspace's settings"):
        ws.as_user(DORA).set_setting(TWO_PERSON_RULE, "on")  # only an admin switches it on
    with pytest.raises(InvalidInputError, match="is one of on, off, not 'yes'"):
        ws.set_setting(TWO_PERSON_RULE, "yes")
    dora, erin, carl = session(ws, DORA), session(ws, ERIN), session(ws, CARL)
    dora.rename(2, "stains")
    dora.approve(2)  # the rule is off: the last editor may approve
    ws.set_setting(TWO_PERSON_RULE, "on")
    assert ws.activity().iloc[-1][["user", "action", "detail"]].tolist() == ["ada", "setting changed",
                                                                            {TWO_PERSON_RULE: "on"}]
    dora.rename(0, "cracks")
    refusal = ("the two-person rule is on in this workspace and Dora made the last edit of cluster 0 (#3), so another "
               "approver must approve it.")
    assert dora.sign_off_refusal(0) == refusal
    with pytest.raises(AccessDeniedError) as refused:
        dora.approve(0)
    assert str(refused.value) == refusal
    assert dora.sign_off_refusal(1) == ""  # a cluster no edit touched: any approver
    assert erin.sign_off_refusal(0) == "" and erin.approve(0).text == "approved cluster 0 'cracks'"
    assert approved(dora) == {2: "Dora", 0: "erin"}

    # the last edit is the latest one *in effect*: carl's move makes him the last editor, his undo makes Dora it again
    erin.withdraw(0)
    carl.refresh()
    carl.move(ws.ids[[3]], 0)
    dora.refresh()
    assert dora.last_edit(0) == (6, "carl") and dora.sign_off_refusal(0) == ""
    carl.undo()
    dora.refresh()
    assert dora.last_edit(0) == (3, "Dora") and dora.sign_off_refusal(0) == refusal
    ws.set_setting(TWO_PERSON_RULE, "off")
    assert dora.sign_off_refusal(0) == ""


# -- later edits withdraw an approval -----------------------------------------------------------------------
EDITS = {  # an edit by carl that changes cluster 0 (positions 0-2), each kind the brief names
    "rename": lambda s, ids: s.rename(0, "cracks"),
    "merge into it": lambda s, ids: s.merge(1, 0),
    "merge it away": lambda s, ids: s.merge(0, 1),
    "split": lambda s, ids: s.split(0, ids[[0]]),
    "move in": lambda s, ids: s.move(ids[[3]], 0),
    "move out": lambda s, ids: s.move(ids[[0]], 1),
    "exclude inside": lambda s, ids: s.exclude(ids[[1]]),
    "verify inside": lambda s, ids: s.verify_images(ids[[2]]),
    "verify the cluster": lambda s, ids: s.verify_cluster(0),
}


@pytest.mark.parametrize("kind", sorted(EDITS))
def test_every_kind_of_later_edit_withdraws_the_approval_and_undo_brings_it_back(ws, kind):
    dora, carl = session(ws, DORA), session(ws, CARL)
    approval = dora.approve(0)
    dora.approve(2)
    carl.refresh()
    edit = EDITS[kind](carl, ws.ids)
    assert edit.text.endswith(f"; this withdrew the approval of cluster 0 'cluster 0' (approved by Dora, "
                              f"#{approval.event_id})")
    assert approved(dora) == {2: "Dora"}  # cluster 2 was not touched
    withdrawal = dora.state.sign_offs.withdrawn[0]
    assert (withdrawal.stamp.user, withdrawal.stamp.event_id, withdrawal.approval.stamp.event_id) == (
        "carl", edit.event_id, approval.event_id)
    assert withdrawal.reason == edit.text.split("; this withdrew")[0]  # why: the edit's own description
    table = approvals_table(dora.state).set_index("cluster")
    if 0 in table.index:  # (merged away, the cluster is gone)
        row = table.loc[0]
        assert not row["approved"] and (row["withdrawn_by"], row["withdrawn_event"]) == ("carl", edit.event_id)
    assert events_table(dora)["description"].iloc[-1] == edit.text  # the history says why

    carl.undo()  # the cluster is what was approved again: so is its approval
    assert approved(dora) == {0: "Dora", 2: "Dora"} and 0 not in dora.state.sign_offs.withdrawn
    assert dora.state.sign_offs.approved[0].stamp.event_id == approval.event_id
    carl.redo()
    assert approved(dora) == {2: "Dora"}
    assert approved(ReviewSession(ws, ws.run_id)) == {2: "Dora"}  # replayed from the log: the same


def test_edits_elsewhere_leave_an_approval_alone_and_a_new_approval_clears_the_withdrawal(ws):
    dora, carl = session(ws, DORA), session(ws, CARL)
    dora.approve(0)
    carl.refresh()
    carl.rename(2, "stains")
    carl.move(ws.ids[[3]], 2)  # cluster 1 to 2: cluster 0 untouched
    carl.verify_cluster(1)
    assert approved(dora) == {0: "Dora"}
    carl.rename(0, "cracks")
    assert approved(dora) == {}
    session(ws, ERIN).approve(0)
    assert approved(dora) == {0: "erin"} and 0 not in dora.state.sign_offs.withdrawn


def test_a_withdrawal_takes_exactly_the_approved_clusters_among_those_touched_and_reverts_exactly():
    """The path every edit takes (an intake adding images too): the approvals of what ``touched`` names go."""
    from tac_core.workspace.sign_off import Approval, SignOffs, Stamp

    signs = SignOffs()
    signs.approve(Approval(4, Stamp(1, "Dora", "", "t1")))
    signs.approve(Approval(5, Stamp(2, "Dora", "", "t2")))
    revert, taken = signs.withdraw([4, 7], Stamp(3, "carl", "", "t3"), "added 2 new image(s)")
    assert [a.cluster for a in taken] == [4] and set(signs.approved) == {5}
    assert signs.withdrawn[4].reason == "added 2 new image(s)"
    revert()
    assert set(signs.approved) == {4, 5} and not signs.withdrawn


# -- withdrawing by hand, and undoing a sign-off ------------------------------------------------------------
def test_an_approver_withdraws_by_hand_and_only_approvers_undo_a_sign_off(ws):
    dora, carl, erin = session(ws, DORA), session(ws, CARL), session(ws, ERIN)
    with pytest.raises(InvalidInputError, match="is not approved; there is no approval to withdraw"):
        dora.withdraw(1)
    approval = dora.approve(1)
    carl.refresh()
    with pytest.raises(AccessDeniedError, match="to sign off clusters they need the approver role"):
        carl.withdraw(1)
    assert "approver role" in carl.refusal("undo")  # a sign-off's undo needs the role too
    edit = dora.withdraw(1, "  wrong class: these are stains  ")
    assert edit.text == ("withdrew the approval of cluster 1 'cluster 1' (approved by Dora, "
                         f"#{approval.event_id}): wrong class: these are stains")
    row = approvals_table(dora.state).set_index("cluster").loc[1]
    assert not row["approved"] and row["withdrawn_because"] == "wrong class: these are stains"
    again = dora.approve(1)
    assert 1 not in dora.state.sign_offs.withdrawn  # approved again: the withdrawal is history now
    with pytest.raises(InvalidInputError, match=re.escape(r"the reason 'two\nlines' contains the control character")):
        dora.withdraw(1, "two\nlines")
    erin.refresh()
    assert erin.undo().text == f"undid #{again.event_id}: approved cluster 1 'cluster 1'"  # another approver's
    assert approved(erin) == {} and erin.state.sign_offs.withdrawn[1].reason == "wrong class: these are stains"
    assert erin.undo().text.startswith(f"undid #{edit.event_id}: withdrew the approval of cluster 1")
    assert approved(erin) == {1: "Dora"} and erin.state.sign_offs.approved[1].stamp.event_id == approval.event_id
    assert approved(ReviewSession(ws, ws.run_id)) == {1: "Dora"}


# -- the history -----------------------------------------------------------------------------------------
def test_the_history_shows_users_approvals_and_undone_events_filtered_and_formula_safe(ws):
    dora, carl = session(ws, DORA), session(ws, CARL)
    carl.rename(0, "=1+1 cracks")
    dora.refresh()
    dora.approve(0)
    dora.approve(1)
    carl.refresh()
    carl.move(ws.ids[[3]], 2)  # withdraws cluster 1's approval
    carl.undo()
    table = events_table(ReviewSession(ws, ws.run_id))
    assert table[["user", "action", "clusters", "images", "undone"]].values.tolist() == [
        ["carl", "rename", "0", 0, False], ["Dora", "approve", "0", 0, False], ["Dora", "approve", "1", 0, False],
        ["carl", "move", "1; 2", 1, True], ["carl", "undo", "1; 2", 1, False]]
    assert "this withdrew the approval of cluster 1" in table["description"][3]
    assert events_table(dora, users=["Dora"])["event_id"].tolist() == [2, 3]
    assert events_table(dora, clusters=[2])["event_id"].tolist() == [4, 5]
    assert events_table(dora, actions=["approve", "undo"], clusters=[1])["event_id"].tolist() == [3, 5]
    assert events_table(dora, users=["nobody"]).empty
    data = history_csv(table)
    assert data.startswith("\ufeff".encode()) and b"\r\n" in data
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert rows[0]["description"] == "renamed cluster 0 from 'cluster 0' to '=1+1 cracks'"
    assert [r["undone"] for r in rows] == ["false", "false", "false", "true", "false"]
    named = events_table(carl, actions=["rename"]).assign(user="=cmd|' /C calc'!A0")
    assert {r["user"] for r in csv.DictReader(io.StringIO(history_csv(named).decode("utf-8-sig")))} == \
           {"'=cmd|' /C calc'!A0"}


# -- exports ------------------------------------------------------------------------------------------------
def test_an_export_restricted_to_approved_clusters_lists_the_approvals_and_verifies(ws, tmp_path):
    dora = session(ws, DORA)
    dora.rename(2, "stains")
    first, second = dora.approve(0), session(ws, ERIN).approve(2)
    result = write_bundle(session(ws, BOB), BundleOptions(approved_only=True), tmp_path)  # a viewer exports
    rows = list(csv.DictReader(io.StringIO((result.path / "labels.csv").read_text("utf-8-sig"))))
    assert sorted({r["cluster_id"] for r in rows}) == ["0", "2"] and len(rows) == 6
    manifest = result.manifest
    assert manifest["selection"] == {"verified_only": False, "approved_only": True, "clusters": None}
    assert [(a["cluster"], a["label"], a["approved_by"], a["email"], a["event_id"]) for a in manifest["approvals"]] \
        == [(0, "cluster 0", "Dora", "dora@plant.example", first.event_id), (2, "stains", "erin", "", second.event_id)]
    assert all(a["approved_at"].endswith("+00:00") for a in manifest["approvals"])
    assert json.loads((result.path / "manifest.json").read_text())["approvals"] == manifest["approvals"]
    assert verify_bundle(result.path, ws) == []

    forged = {**manifest, "approvals": [{**manifest["approvals"][0], "approved_by": "ada"}, manifest["approvals"][1]]}
    (result.path / "manifest.json").write_text(json.dumps(forged))
    assert verify_bundle(result.path, ws) == ["the approval of cluster 0 by ada (event #2) is not an approval in the "
                                              "event log of run 1"]

    # a later edit withdraws cluster 0's approval: the next export leaves it out, and its manifest says so
    session(ws, CARL).exclude(ws.ids[[0]])
    again = write_bundle(session(ws, BOB), BundleOptions(approved_only=True, clusters=(0, 1, 2)), tmp_path)
    assert again.n_rows == 3 and [a["cluster"] for a in again.manifest["approvals"]] == [2]
    everything = write_bundle(session(ws, BOB), dest_dir=tmp_path)  # not restricted: every cluster, the same list
    assert everything.n_rows == 8 and everything.manifest["approvals"] == again.manifest["approvals"]

    plain = export_labels(session(ws, BOB), ws.as_user(BOB), ws.run_id, dest_dir=tmp_path, approved_only=True)
    assert plain.n_rows == 3 and plain.manifest["approved_only"] is True
    assert [a["cluster"] for a in plain.manifest["approvals"]] == [2]
    assert ws.activity().iloc[-1]["detail"]["approved_only"] is True


# -- the command line -----------------------------------------------------------------------------------------
def test_sign_off_from_the_command_line(tmp_path, capsys):
    from tac_core.run.cli import main

    workspace = with_run(create_workspace("cli", tmp_path / "data"))  # the CLI's user (the OS user) is its admin
    path = str(workspace.path)

    def verb(*args) -> str:
        assert main(["workspace", *map(str, args)]) == 0, capsys.readouterr().err
        return capsys.readouterr().out

    assert verb("setting", path, TWO_PERSON_RULE) == "\n"
    assert verb("setting", path, TWO_PERSON_RULE, "on") == "on\n"
    ReviewSession(workspace, workspace.run_id).rename(0, "=cracks")  # the admin's own edit
    assert main(["workspace", "approve", path, "1", "0"]) == 2  # cluster 1 is approved, then 0 is refused
    out, err = capsys.readouterr()
    assert out == "2\n" and err.startswith("run 1: approved cluster 1 'cluster 1'\nerror: the two-person rule is on")
    assert verb("setting", path, TWO_PERSON_RULE, "off") == "off\n"
    assert verb("approve", path, "0", "2", "--run", "1") == "3\n4\n"
    assert verb("withdraw", path, "2", "--reason", "mixed with stains") == "5\n"
    rows = list(csv.DictReader(io.StringIO(verb("approvals", path))))
    assert [(r["cluster"], r["name"], r["approved"], r["approval_event"], r["withdrawn_event"]) for r in rows] == [
        ("0", "'=cracks", "true", "3", "-1"), ("1", "cluster 1", "true", "2", "-1"),
        ("2", "cluster 2", "false", "-1", "5")]
    assert rows[0]["approved_by"] == workspace.user.name and rows[2]["withdrawn_because"] == "mixed with stains"
    history = list(csv.DictReader(io.StringIO(verb("history", path, "--action", "approve", "--action", "withdraw",
                                                   "--cluster", "2"))))
    assert [(r["event_id"], r["user"], r["action"]) for r in history] == [("4", workspace.user.name, "approve"),
                                                                        ("5", workspace.user.name, "withdraw")]
    bundle = tmp_path / "out"
    verb("export", path, "--approved-only", "--out", bundle)
    [made] = bundle.iterdir()
    manifest = json.loads((made / "manifest.json").read_text())
    assert [a["cluster"] for a in manifest["approvals"]] == [0, 1] and manifest["counts"]["rows"] == 6
    assert main(["workspace", "setting", path, TWO_PERSON_RULE, "maybe"]) == 2
    assert "is one of on, off, not 'maybe'" in capsys.readouterr().err
    workspace.close()
