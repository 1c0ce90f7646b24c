"""Images into a workspace: a folder path, uploaded files, an uploaded folder and zips; thumbnails made once;
duplicates across adds; the allowed-roots restriction; names that try to leave the workspace."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from bad_inputs import encode, make_bad_input_corpus, make_hostile_zip, pattern
from tac_core.workspace import ingest
from tac_core.errors import EmptyInputError, InvalidInputError
from tac_core.inputs.thumbnails import thumbnail_path
from tac_core.progress import CancelToken, Cancelled
from tac_core.workspace.workspace import create_workspace


@pytest.fixture
def ws(tmp_path):
    workspace = create_workspace("ingest", tmp_path / "data")
    yield workspace
    workspace.close()


def png(seed: int) -> bytes:
    return encode(pattern((40, 30), seed), "PNG")


def all_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_add_folder_stores_images_and_makes_thumbnails_once(ws, elpv_images):
    stages = []
    report = ingest.add_folder(ws, elpv_images, progress=lambda s, d, t: stages.append(s))
    assert (report.kind, report.files, report.added, report.duplicates, report.skipped) == ("path", 24, 24, 0, 0)
    assert report.thumbnails_made == 24 and {"scanning images", "making thumbnails"} <= set(stages)
    ok = ws.images("ok")
    assert len(ok) == 24 and ok["path"].str.startswith(str(elpv_images)).all()  # left in place, not copied
    for sha in ok["sha256"]:
        with Image.open(thumbnail_path(ws.thumbs_dir, sha)) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) == 256
    before = {p: p.stat().st_mtime_ns for p in ws.thumbs_dir.iterdir()}

    again = ingest.add_folder(ws, elpv_images)
    assert (again.added, again.duplicates, again.thumbnails_made) == (0, 24, 0)
    assert {row[1] for row in again.not_added} == {"duplicate"}
    assert all("already in this workspace" in row[2] for row in again.not_added)
    assert {p: p.stat().st_mtime_ns for p in ws.thumbs_dir.iterdir()} == before
    assert ws.image_counts() == {"ok": 24, "skipped": 0, "duplicate": 24, "total": 48}


def test_embedding_reuses_the_ingest_thumbnails(ws, elpv_images, tiny_spec):
    from tac_core.embedding.embed import embed_images

    ingest.add_folder(ws, elpv_images)
    before = {p.name: p.stat().st_mtime_ns for p in ws.thumbs_dir.iterdir()}
    ok = ws.images("ok")
    result = embed_images(tiny_spec, ok["path"].tolist(), ok["sha256"].tolist(), ws.cache_dir, device="cpu",
                          thumbnails_dir=ws.thumbs_dir)
    assert not result.failed
    assert {p.name: p.stat().st_mtime_ns for p in ws.thumbs_dir.iterdir()} == before


def test_add_folder_lists_every_skipped_file_with_its_reason(ws, tmp_path):
    cases = make_bad_input_corpus(tmp_path / "share")
    report = ingest.add_folder(ws, tmp_path / "share")
    expected_ok = sum(case.expected_status == "ok" for case in cases)
    assert report.added == expected_ok and report.skipped + report.duplicates == len(cases) - expected_ok
    stored = ws.skipped_images().set_index("rel_path")
    for case in cases:
        if case.expected_status != "ok":
            assert stored.loc[case.rel_path, "status"] == case.expected_status
            if case.expected_reason:
                assert case.expected_reason in stored.loc[case.rel_path, "reason"]
    assert report.thumbnails_made == expected_ok


def test_uploaded_files_and_zips_are_copied_inside_the_workspace(ws, tmp_path):
    hostile = tmp_path / "hostile.zip"
    zip_cases = make_hostile_zip(hostile)
    uploads = [("a.png", png(1)), ("sub/b.png", png(2)), ("../../escape.png", png(3)), ("/etc/abs.png", png(4)),
               ("C:\\win\\drive.png", png(5)), (".hidden.png", png(6)), ("notes.txt", b"not an image"),
               ("photos.zip", hostile.read_bytes())]
    outside_before = all_files(tmp_path) - all_files(ws.path)
    report = ingest.add_uploads(ws, uploads)
    assert report.kind == "upload" and report.added >= 3
    # nothing was written outside the workspace's files/ folder
    assert all_files(tmp_path) - all_files(ws.path) == outside_before
    upload_dirs = [p for p in ws.files_dir.iterdir()]
    assert len(upload_dirs) == 1 and not upload_dirs[0].name.startswith(".")
    images = ws.images()
    for path in images.loc[images["status"] == "ok", "path"]:
        assert Path(path).resolve().is_relative_to(upload_dirs[0].resolve())
    assert {"a.png", "sub/b.png"} <= set(images.loc[images["status"] == "ok", "rel_path"])
    # the zip's good members (one picture three times) keep their sanitised paths under the zip's name
    assert {"photos/photos/line 1/ok.png", "photos/bad_name_.png", "photos/_CON.png"} <= set(images["rel_path"])
    reasons = dict(zip(images["rel_path"], images["reason"]))
    assert "path leaves the folder" in reasons["../../escape.png"]
    assert reasons["/etc/abs.png"] == "absolute path" and reasons["C:/win/drive.png"] == "absolute path"
    assert reasons[".hidden.png"] == "hidden or system file"
    assert "not an image" in reasons["notes.txt"]
    for case in zip_cases:
        if case.expected_status == "rejected":
            assert case.expected_reason in reasons[f"photos.zip/{case.rel_path}"]


def test_a_single_zip_upload_is_a_zip_source_without_a_prefix(ws, tmp_path):
    buffer = tmp_path / "set.zip"
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("line1/x.png", png(7))
        archive.writestr("y.png", png(8))
    report = ingest.add_uploads(ws, [("set.zip", buffer.read_bytes())])
    assert report.kind == "zip" and report.added == 2
    assert set(ws.images("ok")["rel_path"]) == {"line1/x.png", "y.png"}
    assert ws.sources().iloc[-1]["kind"] == "zip"


def test_folder_upload_drops_the_folder_name_and_matches_add_by_path(ws, tmp_path):
    class Uploaded:  # what Streamlit gives: a file object whose name is the browser's relative path
        def __init__(self, name, data):
            import io
            self.name, self._io = name, io.BytesIO(data)

        def read(self, *args):
            return self._io.read(*args)

        def seek(self, *args):
            return self._io.seek(*args)

    report = ingest.add_uploads(ws, [Uploaded("photos/a.png", png(1)), Uploaded("photos/sub/b.png", png(2))],
                                folder_upload=True)
    assert report.kind == "folder" and report.location == "uploaded folder photos"
    assert set(ws.images("ok")["rel_path"]) == {"a.png", "sub/b.png"}


def test_duplicates_are_found_across_adds_and_kinds(ws, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "one.png").write_bytes(png(1))
    ingest.add_folder(ws, folder)
    report = ingest.add_uploads(ws, [("copy of one.png", png(1)), ("two.png", png(2)), ("again two.png", png(2))])
    assert (report.added, report.duplicates) == (1, 2)
    duplicates = ws.images("duplicate").set_index("rel_path")
    assert "already in this workspace" in duplicates.loc["copy of one.png", "reason"]
    assert "same content as" in duplicates.loc["two.png", "reason"] or "same content as" in \
        duplicates.loc["again two.png", "reason"]


def test_only_files_that_became_images_are_kept_on_disk(ws, tmp_path):
    """Issue 11, bug 10: a zip of nothing but duplicates was unpacked and kept (17 MB for 8.3 MB of images)."""
    first = ingest.add_uploads(ws, [("a.png", png(1)), ("b.png", png(2))])
    buffer = tmp_path / "again.zip"
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("copies/a.png", png(1))
        archive.writestr("copies/b.png", png(2))
        archive.writestr("b-again.png", png(2))
    before = all_files(ws.files_dir)
    report = ingest.add_uploads(ws, [("again.zip", buffer.read_bytes())])
    assert (report.added, report.duplicates) == (0, 3)
    assert all_files(ws.files_dir) == before  # nothing of the zip stays on disk
    assert sorted(p.name for p in ws.files_dir.iterdir()) == [Path(ws.sources()["root"].iloc[0]).name]
    assert set(ws.images("duplicate")["rel_path"]) == {"copies/a.png", "copies/b.png", "b-again.png"}  # still listed
    mixed = ingest.add_uploads(ws, [("c.png", png(3)), ("a copy.png", png(1)), ("notes.txt", b"text")])
    kept = {p.relative_to(ws.files_dir).parts[-1] for p in all_files(ws.files_dir) - before}
    assert kept == {"c.png"} and mixed.added == 1 and mixed.skipped == 1 and first.added == 2


def test_allowed_roots_restrict_server_folders(ws, tmp_path, monkeypatch):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "photos").mkdir(parents=True)
    outside.mkdir()
    (allowed / "photos" / "a.png").write_bytes(png(1))
    (outside / "b.png").write_bytes(png(2))
    monkeypatch.setenv(ingest.ALLOWED_ROOTS_ENV, os.pathsep.join([str(allowed), str(tmp_path / "also")]))
    assert ingest.allowed_roots() == [allowed.resolve(), (tmp_path / "also").resolve()]
    assert ingest.add_folder(ws, allowed / "photos").added == 1
    with pytest.raises(InvalidInputError, match=ingest.ALLOWED_ROOTS_ENV):
        ingest.add_folder(ws, outside)
    (allowed / "sneaky").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidInputError, match="outside the folders"):
        ingest.add_folder(ws, allowed / "sneaky")  # a link inside an allowed root is judged by its target
    with pytest.raises(InvalidInputError, match="outside the folders"):
        ingest.add_folder(ws, allowed / ".." / "outside")
    monkeypatch.delenv(ingest.ALLOWED_ROOTS_ENV)
    assert ingest.allowed_roots() is None and ingest.add_folder(ws, outside).added == 1


@pytest.mark.parametrize("path, message", [("", "empty"), ("relative/photos", "not a full path"),
                                           ("/no/such/folder/anywhere", "does not exist")])
def test_bad_folder_paths_are_explained(ws, path, message):
    with pytest.raises(InvalidInputError, match=message):
        ingest.add_folder(ws, path)


def test_a_file_or_the_workspace_itself_is_refused(ws, tmp_path):
    (tmp_path / "one.png").write_bytes(png(1))
    with pytest.raises(InvalidInputError, match="is a file"):
        ingest.add_folder(ws, tmp_path / "one.png")
    with pytest.raises(InvalidInputError, match="workspace's own folder"):
        ingest.add_folder(ws, ws.path.parent)


def test_cancel_or_empty_upload_leaves_nothing_behind(ws):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        ingest.add_uploads(ws, [("a.png", png(1))], cancel=token)
    with pytest.raises(EmptyInputError):
        ingest.add_uploads(ws, [])
    assert list(ws.files_dir.iterdir()) == [] and ws.sources().empty
    report = ingest.add_uploads(ws, [("../x.png", png(1))])  # every name refused: an add that says why
    assert (report.added, report.skipped) == (0, 1) and "leaves the folder" in report.not_added[0][2]
    assert all_files(ws.files_dir) == set()


@pytest.mark.parametrize("name, expected", [("a/b.png", "a/b.png"), ("a\\b.png", "a/b.png"), ("./a/./b.png", "a/b.png"),
                                            ("ab:c?.png", "ab_c_.png"), ("con.png", "_con.png")])
def test_safe_relative_path_keeps_names_valid(name, expected):
    assert ingest.safe_relative_path(name) == expected


@pytest.mark.parametrize("name", ["../a.png", "a/../../b.png", "/abs.png", "C:/x.png", "", ".git/config",
                                  "__MACOSX/a.png"])
def test_safe_relative_path_refuses_escapes_and_junk(name):
    with pytest.raises(InvalidInputError):
        ingest.safe_relative_path(name)
