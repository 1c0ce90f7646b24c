"""Access in the engine: users, roles and members, the one check every change goes through, who is recorded
behind each decision, unclaimed workspaces, and the server's settings (``TAC_STUDIO_AUTH``, ``TAC_STUDIO_ADMINS``,
``TAC_STUDIO_ALLOWED_ROOTS``). The browser side is in ``test_access_app.py`` and ``test_access_browser.py``."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tac_core.errors import InvalidInputError
from tac_core.inputs import vocab_spec
from tac_core.inputs.imageset import ImageRecord, ImageSet
from tac_core.run import jobs
from tac_core.run.params import RunParams
from tac_core.workspace import ingest
from tac_core.workspace.access import ACTIONS, AccessDeniedError, Role, User, auth_mode, default_user
from tac_core.workspace.export import export_labels
from tac_core.workspace.recluster_run import recluster_into_new_run
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.store import SCHEMA_VERSION
from tac_core.workspace.workspace import (NameTakenError, create_workspace, delete_workspace, list_workspaces,
                                          open_workspace, rename_workspace)

LEGACY = Path(__file__).with_name("data") / "legacy_workspace"
ADA = User("ada", "ada@plant.example")
BOB = User("bob")
CARL = User("carl", "carl@plant.example")
DORA = User("Dora")
EVE = User("eve")  # never a member
ROLES = {"bob": Role.VIEWER, "carl": Role.REVIEWER, "dora": Role.APPROVER}


@pytest.fixture(autouse=True)
def local_mode(monkeypatch):
    for name in ("TAC_STUDIO_AUTH", "TAC_STUDIO_ADMINS", ingest.ALLOWED_ROOTS_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def ws(tmp_path):
    """A workspace created by ada (its admin) with bob viewer, carl reviewer, Dora approver, and one done run."""
    workspace = create_workspace("line 3", tmp_path / "data", creator=ADA)
    workspace.add_member("bob", "viewer")
    workspace.add_member("carl", Role.REVIEWER, email="carl@plant.example")
    workspace.add_member("Dora", "approver")
    records = tuple(ImageRecord(f"/src/{i}.png", f"{i}.png", f"{i:064x}", 10, 4, 4, "ok", "") for i in range(6))
    ids = np.array(workspace.add_image_set(ImageSet("/src", records), "upload", "six files").image_ids)
    run_id = workspace.create_run({"n_clusters": 2}, ids)
    rng = np.random.default_rng(0)
    arrays = {"image_embeddings": rng.standard_normal((6, 8)), "counterparts": rng.standard_normal((6, 8))}
    workspace.save_run_result(run_id, ids, np.array([0, 0, 0, 1, 1, 1]), np.linspace(0.5, 1, 6),
                              [[("crack", 0.3)], [("stain", 0.2)]], arrays=arrays)
    workspace.run_id, workspace.ids = run_id, ids
    yield workspace
    workspace.close()


def as_(ws, user):
    return ws.as_user(user, session=f"browser-{user.name}")


def event_count(ws) -> int:
    return ws.connection().execute("SELECT COUNT(*) FROM events").fetchone()[0]


# -- roles -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize("user", [ADA, BOB, CARL, DORA, EVE], ids=lambda u: u.name)
def test_each_role_may_do_exactly_the_actions_at_or_below_it(ws, user, action):
    role = {**ROLES, "ada": Role.ADMIN}.get(user.key)
    allowed = role is not None and role >= ACTIONS[action][0]
    assert ws.allows(action, user) == allowed
    handle = as_(ws, user)
    if allowed:
        assert handle.require(action) == user
    else:
        with pytest.raises(AccessDeniedError) as caught:
            handle.require(action)
        message = str(caught.value)
        assert "not a member" in message if role is None else f"the {ACTIONS[action][0].label} role" in message


def test_the_creator_is_admin_and_admins_manage_members_by_user_name(ws):
    members = ws.members()
    assert members["name"].tolist() == ["ada", "Dora", "carl", "bob"]  # highest role first
    assert members.set_index("name").loc["ada", "email"] == "ada@plant.example"
    assert as_(ws, User("DORA")).role_of() == Role.APPROVER  # user names match ignoring case
    as_(ws, ADA).add_member("bob", "reviewer")  # change a role
    assert ws.role_of(BOB) == Role.REVIEWER
    as_(ws, ADA).remove_member("BOB")
    assert ws.role_of(BOB) is None
    with pytest.raises(InvalidInputError, match="not a member"):
        as_(ws, ADA).remove_member("bob")
    with pytest.raises(InvalidInputError, match="role 'owner' is not one of viewer, reviewer, approver, admin"):
        as_(ws, ADA).add_member("eve", "owner")
    for user in (CARL, DORA):
        with pytest.raises(AccessDeniedError, match="to add or remove members they need the admin role"):
            as_(ws, user).add_member("eve", "admin")
    activity = ws.activity()
    assert activity["action"].tolist()[:5] == ["workspace created", "member added", "member added", "member added",
                                               "images added"]
    assert activity["user"].iloc[0] == "ada" and activity["detail"].iloc[1] == {"member": "bob", "role": "viewer"}


def test_a_member_removed_meanwhile_is_refused_at_the_next_change(ws):
    session = ReviewSession(as_(ws, CARL), ws.run_id)
    session.rename(0, "cracks")
    as_(ws, ADA).remove_member("carl")
    with pytest.raises(AccessDeniedError, match="carl is not a member"):
        session.rename(1, "stains")
    assert [h["text"] for h in session.history()] == ["renamed cluster 0 from 'cluster 0' to 'cracks'"]


def test_a_workspace_always_keeps_an_admin(ws):
    admin = as_(ws, ADA)
    with pytest.raises(InvalidInputError, match="only admin"):
        admin.remove_member("ada")
    with pytest.raises(InvalidInputError, match="only admin"):
        admin.add_member("ada", "viewer")
    admin.add_member("Dora", "admin")
    admin.add_member("ada", "viewer")  # another admin exists now
    assert ws.role_of(ADA) == Role.VIEWER and ws.role_of(DORA) == Role.ADMIN


# -- the engine refuses, not only the UI -----------------------------------------------------------------
def test_a_viewer_calling_the_engine_directly_cannot_change_anything(ws, tmp_path):
    viewer = as_(ws, BOB)
    session = ReviewSession(viewer, ws.run_id)
    before = event_count(ws)
    for edit in (lambda: session.rename(0, "cracks"), lambda: session.move([ws.ids[0]], 1),
                 lambda: session.verify_images([ws.ids[0]]), lambda: session.exclude([ws.ids[1]]),
                 lambda: session.verify_cluster(0), lambda: session.merge(1, 0), lambda: session.split(0, [ws.ids[0]])):
        with pytest.raises(AccessDeniedError, match="bob is a viewer of this workspace; to edit the review they need "
                                                    "the reviewer role or higher"):
            edit()
    assert event_count(ws) == before and session.state.names == {0: "cluster 0", 1: "cluster 1"}
    assert "needs" not in session.refusal("view") and session.refusal("edit").startswith("bob is a viewer")
    with pytest.raises(AccessDeniedError, match="change vocabulary sets"):
        viewer.save_vocab_set("mine", vocab_spec.default_spec())
    assert vocab_spec.ensure_default_set(viewer) is None  # no set to show, none created
    with pytest.raises(AccessDeniedError, match="start, re-run or cancel runs"):
        viewer.create_run({"n_clusters": 2}, ws.ids)
    with pytest.raises(AccessDeniedError, match="start, re-run or cancel runs"):
        jobs.rerun(viewer, ws.run_id)
    with pytest.raises(AccessDeniedError, match="add images"):
        ingest.add_uploads(viewer, [("a.png", b"not read")])
    assert not any(viewer.files_dir.iterdir())  # refused before anything was written
    with pytest.raises(AccessDeniedError, match="add images"):
        viewer.add_image_set(ImageSet("/x", ()), "upload", "nothing")
    with pytest.raises(AccessDeniedError, match="rename the workspace"):
        rename_workspace(ws.path, "mine", user=BOB)
    with pytest.raises(AccessDeniedError, match="delete the workspace"):
        delete_workspace(ws.path, user=BOB)
    assert ws.path.is_dir() and ws.name == "line 3"
    with pytest.raises(AccessDeniedError):
        recluster_into_new_run(session)
    assert len(ws.runs()) == 1
    result = export_labels(session, viewer, ws.run_id, dest_dir=tmp_path / "out")  # a viewer may export
    assert result.manifest["exported_by"] == {"name": "bob", "email": ""}
    assert ws.activity().iloc[-1][["user", "action", "session"]].tolist() == ["bob", "export", "browser-bob"]


def test_server_folders_and_settings_need_an_admin_and_the_path_is_not_even_looked_at(ws, tmp_path):
    for user in (CARL, DORA):
        with pytest.raises(AccessDeniedError, match="add a folder of the server by its path"):
            ingest.add_folder(as_(ws, user), "/no/such/folder")  # not "does not exist": nothing learned
    with pytest.raises(InvalidInputError, match="does not exist"):
        ingest.add_folder(as_(ws, ADA), "/no/such/folder")
    with pytest.raises(AccessDeniedError, match="change the workspace's settings"):  # where images are sent
        as_(ws, DORA).set_setting("ray_address", "evil-cluster:6379")
    as_(ws, ADA).set_setting("ray_address", "local")
    assert ws.setting("ray_address") == "local" and ws.activity().iloc[-1]["action"] == "setting changed"


def test_a_non_member_is_refused_everything_and_sees_no_workspace(ws):
    stranger = as_(ws, EVE)
    assert stranger.role_of() is None and not stranger.allows("view")
    with pytest.raises(AccessDeniedError, match="eve is not a member of this workspace"):
        stranger.require("view")
    with pytest.raises(AccessDeniedError, match="not a member"):
        ReviewSession(stranger, ws.run_id).rename(0, "x")
    with pytest.raises(AccessDeniedError, match="not a member"):
        export_labels(ReviewSession(stranger, ws.run_id), stranger, ws.run_id)
    root = ws.path.parent
    assert list_workspaces(root, user=EVE) == []
    [info] = list_workspaces(root, user=BOB)
    assert (info.name, info.role, info.members) == ("line 3", "viewer", 4)
    with pytest.raises(NameTakenError) as caught:  # the name is taken; nothing else is said
        create_workspace("LINE 3", root, creator=EVE)
    assert str(root) not in str(caught.value) and "ada" not in str(caught.value)


# -- a person behind every decision -----------------------------------------------------------------------
def test_every_event_records_the_user_and_undo_takes_only_your_own_edit(ws):
    carl = ReviewSession(as_(ws, CARL), ws.run_id)
    dora = ReviewSession(as_(ws, DORA), ws.run_id)
    ada = ReviewSession(as_(ws, ADA), ws.run_id)
    carl.rename(0, "cracks")
    dora.verify_images([ws.ids[3]])
    carl.refresh()  # as a page does on every run
    assert carl.refusal("undo") == ("the edit to undo (#2) was made by Dora; only an approver or an admin may undo "
                                    "or redo another person's edit.")
    with pytest.raises(AccessDeniedError, match="made by Dora"):
        carl.undo()
    assert dora.refusal("undo") == "" and dora.undo().text.startswith("undid #2")
    carl.refresh()
    assert carl.refusal("redo").startswith("the edit to redo (#2) was made by Dora")
    assert carl.refusal("undo") == "" and carl.undo().text.startswith("undid #1")  # his own edit
    assert ada.refusal("redo") == "" and ada.redo().text.startswith("redid #1")  # an admin redoes anyone's
    history = ada.history()
    assert [(h["user"], h["kind"]) for h in history] == [("carl", "rename"), ("Dora", "verify_images"),
                                                         ("Dora", "undo"), ("carl", "undo"), ("ada", "redo")]
    assert history[0]["email"] == "carl@plant.example" and history[0]["session"] == "browser-carl"
    rows = ws.connection().execute("SELECT user_name, user_email, session FROM events ORDER BY id").fetchall()
    assert rows[0] == ("carl", "carl@plant.example", "browser-carl")
    assert ReviewSession(ws, ws.run_id).history() == history  # replayed from the log: the same


def test_an_explicit_user_overrides_the_handle_and_recluster_runs_as_that_user(ws):
    session = ReviewSession(ws, ws.run_id, user=CARL)  # ws acts for ada; this session for carl
    session.verify_images([ws.ids[0]])
    assert session.history()[-1]["user"] == "carl"
    outcome = recluster_into_new_run(session)
    started = ws.activity(outcome.run_id)
    assert started[["user", "action"]].values.tolist() == [["carl", "run started"]]
    assert {h["user"] for h in ReviewSession(ws, outcome.run_id).history()} == {"carl"}


def test_vocabulary_runs_and_uploads_are_recorded_with_the_user(ws, tmp_path, elpv_images, monkeypatch):
    monkeypatch.setenv(jobs.INLINE_ENV, "1")
    carl = as_(ws, CARL)
    assert vocab_spec.ensure_default_set(carl) == "default"
    vocab_spec.change_set(carl, "default", lambda s: vocab_spec.add_domain_terms(s, ["crack"])[0])
    files = sorted(elpv_images.glob("*.png"))[:3]
    report = ingest.add_uploads(carl, [(f.name, f.read_bytes()) for f in files])
    assert report.added == 3
    ws.add_member("bob", "reviewer")
    bob = as_(ws, BOB)
    run_id = bob.create_run({"n_clusters": 2}, list(report.image_ids))
    jobs.cancel_run(bob, run_id)
    log = ws.activity()
    tail = log.iloc[-6:][["user", "email", "action"]].values.tolist()
    assert tail == [["carl", "carl@plant.example", "vocabulary saved"], ["carl", "carl@plant.example",
                                                                         "vocabulary saved"],
                    ["carl", "carl@plant.example", "images added"], ["ada", "ada@plant.example", "member changed"],
                    ["bob", "", "run started"], ["bob", "", "run cancelled"]]
    assert log.iloc[-2]["run_id"] == run_id and log.iloc[-4]["detail"]["added"] == 3
    assert log.iloc[-1]["session"] == "browser-bob"


# -- workspaces made by TAC Studio 0.1 and unclaimed workspaces ---------------------------------------------
@pytest.fixture
def legacy(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(LEGACY, root / "legacy-0000")
    return root / "legacy-0000"


def test_a_workspace_of_version_0_1_migrates_and_its_old_events_read_unknown(legacy):
    with sqlite3.connect(legacy / "workspace.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    workspace = open_workspace(legacy)
    try:
        assert workspace.connection().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert not workspace.claimed and workspace.members().empty and workspace.activity().empty
        history = ReviewSession(workspace, 1).history()
        assert {h["user"] for h in history} == {"unknown"} and {h["email"] for h in history} == {""}
        # local mode: everyone acts as its admin, as before; a new edit carries the user's name
        assert workspace.role_of(EVE) == Role.ADMIN
        session = ReviewSession(workspace.as_user(EVE), 1)
        assert session.refusal("undo") == ""  # an admin may undo the old, unknown author's edits
        session.rename(1, "fingers")
        assert session.history()[-1]["user"] == "eve"
    finally:
        workspace.close()


def test_served_to_the_network_an_unclaimed_workspace_is_closed_until_a_server_admin_claims_it(legacy,
                                                                                               monkeypatch):
    monkeypatch.setenv("TAC_STUDIO_AUTH", "proxy")
    monkeypatch.setenv("TAC_STUDIO_ADMINS", "root-admin, Ops@Plant.example")
    assert auth_mode() == "proxy" and default_user() is None
    workspace = open_workspace(legacy)  # opening reads; the job process does it with no user
    try:
        with pytest.raises(AccessDeniedError, match="nobody is signed in"):
            workspace.require("view")
        with pytest.raises(AccessDeniedError, match="nobody is signed in"):
            ReviewSession(workspace, 1).rename(0, "x")
        for user in (EVE, ADA):
            assert workspace.role_of(user) is None
            with pytest.raises(AccessDeniedError, match="not a member"):
                ReviewSession(workspace.as_user(user), 1).rename(0, "x")
            with pytest.raises(AccessDeniedError, match="only a server admin"):
                workspace.as_user(user).claim()
        root = legacy.parent
        assert list_workspaces(root, user=EVE) == []
        ops = User("ops@plant.example")
        [info] = list_workspaces(root, user=ops)  # shown to a server admin, to be claimed
        assert info.role == "" and info.members == 0
        workspace.as_user(ops, "s1").claim()
        assert workspace.role_of(ops) == Role.ADMIN
        with pytest.raises(AccessDeniedError, match="already has members"):
            workspace.as_user(User("root-admin")).claim()
        assert list_workspaces(root, user=User("root-admin")) == []  # claimed: members only from now on
        assert workspace.activity()[["user", "action", "session"]].values.tolist() == [
            ["ops@plant.example", "claimed", "s1"]]
        with pytest.raises(AccessDeniedError, match="nobody is signed in"):
            create_workspace("new", root)
        with pytest.raises(AccessDeniedError, match="only a server admin may delete"):
            (root / "broken").mkdir()
            delete_workspace(root / "broken", root, user=EVE)
    finally:
        workspace.close()


def test_a_bad_auth_setting_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("TAC_STUDIO_AUTH", "none")
    with pytest.raises(InvalidInputError, match="TAC_STUDIO_AUTH='none' is not one of local, proxy, oidc"):
        create_workspace("x", tmp_path)


def test_served_to_the_network_server_folders_need_allowed_roots(ws, monkeypatch, elpv_images):
    monkeypatch.setenv("TAC_STUDIO_AUTH", "oidc")
    admin = as_(ws, ADA)
    with pytest.raises(InvalidInputError, match="switched off: TAC Studio is served to other machines .* "
                                                "TAC_STUDIO_ALLOWED_ROOTS is not set"):
        ingest.add_folder(admin, elpv_images)
    assert "Switched off" in ingest.describe_roots()
    monkeypatch.setenv(ingest.ALLOWED_ROOTS_ENV, str(elpv_images.parent))
    assert ingest.add_folder(admin, elpv_images).added == len(list(elpv_images.glob("*.png")))


def test_handles_for_one_user_are_one_object_sharing_the_connections(ws):
    handle = ws.as_user(CARL, "s")
    assert ws.as_user(CARL, "s") is handle and ws.as_user(CARL, "t") is not handle
    assert handle.connection() is ws.connection() and handle.user == CARL and ws.user == ADA
    assert User(" carl ").key == User("CARL").key == "carl"
    with pytest.raises(InvalidInputError, match="user name is empty"):
        User("  ")
    with pytest.raises(InvalidInputError, match="control character"):
        User("carl\nadmin")


def test_start_run_is_refused_to_a_viewer_before_any_run_exists(ws, tiny_spec):
    params = RunParams(n_clusters=2, model=tiny_spec, vocab_spec={"wordnet": False, "domain_terms": ["crack", "stain"]})
    with pytest.raises(AccessDeniedError, match="start, re-run or cancel runs"):
        jobs.start_run(as_(ws, BOB), params, ws.ids)
    assert len(ws.runs()) == 1


def test_a_bundle_is_exported_as_the_sessions_user_and_its_log_hash_covers_who_decided(ws, tmp_path):
    from tac_core.workspace.bundle import write_bundle
    from tac_core.workspace.manifest import verify_bundle

    ReviewSession(as_(ws, CARL), ws.run_id).rename(0, "cracks")
    with pytest.raises(AccessDeniedError, match="eve is not a member"):
        write_bundle(ReviewSession(as_(ws, EVE), ws.run_id), dest_dir=tmp_path)
    result = write_bundle(ReviewSession(as_(ws, BOB), ws.run_id), dest_dir=tmp_path)  # a viewer may export
    assert result.manifest["exported_by"] == {"name": "bob", "email": ""}
    assert "user_name" in result.manifest["review"]["event_log"]["columns"]
    assert ws.activity().iloc[-1][["user", "action"]].tolist() == ["bob", "export"]
    assert verify_bundle(result.path, ws) == []
    ws.connection().execute("UPDATE events SET user_name = 'dora'")  # someone rewrites who decided
    assert any("event log" in problem for problem in verify_bundle(result.path, ws))
