"""Scanning folders and file lists into image sets: every odd file gets its status and reason. (Zips:
tests/test_zips.py.)"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bad_inputs import make_bad_input_corpus, make_empty_folder, make_folder_without_images
from tac_core.inputs import imageset
from tac_core.errors import EmptyInputError, InvalidInputError
from tac_core.inputs.imageset import (ImageRecord, ImageSet, open_image_rgb, scan_files,
                               scan_folder)
from tac_core.progress import CancelToken, Cancelled


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("scan_corpus")
    started = time.perf_counter()
    cases = make_bad_input_corpus(root)
    generated = time.perf_counter()
    image_set = scan_folder(root)
    print(f"corpus of {len(cases)} cases: generated in {generated - started:.2f} s, "
          f"scanned in {time.perf_counter() - generated:.2f} s")
    return root, cases, image_set


def test_every_case_gets_its_status_and_reason(corpus):
    _, cases, image_set = corpus
    assert len(cases) >= 30
    by_rel = {r.rel_path: r for r in image_set.records}
    assert sorted(by_rel) == sorted(c.rel_path for c in cases), "every entry listed, nothing else"
    for case in cases:
        record = by_rel[case.rel_path]
        assert record.status == case.expected_status, (case.name, record)
        if case.expected_reason is not None:
            assert case.expected_reason in record.reason, (case.name, record)
        if record.status == "ok":
            assert record.reason == "" and record.width > 0 and record.height > 0, case.name


def test_summary_counts_add_up(corpus):
    _, cases, image_set = corpus
    summary = image_set.summary()
    assert summary["files"] == len(cases) == summary["ok"] + summary["skipped"] + summary["duplicates"]
    for status, key in (("ok", "ok"), ("skipped", "skipped"), ("duplicate", "duplicates")):
        assert summary[key] == sum(c.expected_status == status for c in cases)
    assert len(image_set.ok) == len(image_set.paths) == len(image_set.keys) == summary["ok"]


def test_records_are_sorted_absolute_posix_and_hashed(corpus):
    root, _, image_set = corpus
    rel_paths = [r.rel_path for r in image_set.records]
    assert rel_paths == sorted(rel_paths)
    assert image_set.root == str(root)
    for record in image_set.records:
        assert isinstance(record, ImageRecord) and "\\" not in record.rel_path
        assert record.path == os.path.join(str(root), *record.rel_path.split("/"))
    for record in image_set.ok + image_set.duplicates:
        assert record.sha256 == hashlib.sha256(Path(record.path).read_bytes()).hexdigest()
        assert record.size_bytes == os.path.getsize(record.path)
    assert image_set.keys == [r.sha256 for r in image_set.ok]
    assert len(set(image_set.keys)) == len(image_set.keys)


def test_duplicates_point_at_the_first_copy(corpus):
    _, _, image_set = corpus
    firsts = {r.rel_path: r for r in image_set.ok}
    assert image_set.duplicates
    for duplicate in image_set.duplicates:
        assert duplicate.duplicate_of in firsts
        assert firsts[duplicate.duplicate_of].sha256 == duplicate.sha256
        assert duplicate.reason == f"same content as {duplicate.duplicate_of}"


def test_record_size_is_upright(corpus):
    _, _, image_set = corpus
    sizes = {r.rel_path: (r.width, r.height) for r in image_set.records}
    assert sizes["exif_rotated.jpg"] == (20, 40)
    assert sizes["large_4000x3000.jpg"] == (4000, 3000)
    assert sizes["one_pixel.png"] == (1, 1)


def test_every_ok_image_decodes_to_rgb_at_the_recorded_size(corpus):
    _, _, image_set = corpus
    for record in image_set.ok:
        image = open_image_rgb(record.path)
        assert image.mode == "RGB" and image.size == (record.width, record.height), record.rel_path
        assert np.asarray(image).dtype == np.uint8


def test_scan_is_deterministic_whatever_the_thread_count(corpus):
    root, _, image_set = corpus
    assert scan_folder(root, workers=1) == image_set
    assert scan_folder(root, workers=7) == image_set


def test_progress_reports_every_file_and_cancel_stops_between_files(corpus):
    root, _, _ = corpus
    calls = []
    scan_folder(root, progress=lambda *call: calls.append(call))
    assert {stage for stage, _, _ in calls} == {"scanning images"}
    done = [d for _, d, _ in calls]
    assert done == sorted(done) and done[0] == 0 and calls[-1][1] == calls[-1][2] > 0

    token = CancelToken()
    seen = []

    def cancel_after_three(stage, done, total):
        seen.append(done)
        if done == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        scan_folder(root, progress=cancel_after_three, cancel=token, workers=2)
    assert max(seen) == 3
    with pytest.raises(Cancelled):
        scan_folder(root, cancel=token)


def test_files_too_big_to_hold_in_memory_give_the_same_records(corpus, monkeypatch):
    """Above IN_MEMORY_BYTES a file's header is checked first, then it is hashed and decoded in two passes."""
    root, _, image_set = corpus
    monkeypatch.setattr(imageset, "IN_MEMORY_BYTES", 100)

    def outcome(records):  # a file refused from its header alone is not hashed
        return [replace(r, sha256="") if r.status == "skipped" else r for r in records]

    assert outcome(scan_folder(root).records) == outcome(image_set.records)


def test_per_scan_pixel_limit(corpus):
    root, _, _ = corpus
    limited = {r.rel_path: r for r in scan_folder(root, max_pixels=10_000_000).records}
    assert limited["large_4000x3000.jpg"].status == "skipped"
    assert limited["large_4000x3000.jpg"].reason == "image is 12 megapixels, above the 10-megapixel limit"


def test_non_recursive_scan_stays_at_the_top(corpus):
    root, _, _ = corpus
    rel_paths = {r.rel_path for r in scan_folder(root, recursive=False).records}
    assert "png_named.jpg" in rel_paths
    assert not any("/" in rel for rel in rel_paths)
    assert "a" not in rel_paths and "__MACOSX" not in rel_paths


def test_scan_files_uses_the_common_folder_or_the_given_root(corpus):
    root, _, _ = corpus
    chosen = [root / "a" / "b" / "c" / "deep.png", root / "gray.jpg", root / "notes.jpg", root / "gray.jpg"]
    image_set = scan_files(chosen)
    assert image_set.root == str(root)
    assert [(r.rel_path, r.status) for r in image_set.records] == [
        ("a/b/c/deep.png", "ok"), ("gray.jpg", "ok"), ("notes.jpg", "skipped")]
    assert [r.rel_path for r in scan_files(chosen[:1], root=root / "a").records] == ["b/c/deep.png"]
    with pytest.raises(InvalidInputError, match="is not inside"):
        scan_files(chosen, root=root / "a")


def test_empty_folder_and_folder_without_images(tmp_path):
    empty = scan_folder(make_empty_folder(tmp_path))
    assert empty.records == () and empty.summary() == {"files": 0, "ok": 0, "skipped": 0, "duplicates": 0}
    with pytest.raises(EmptyInputError, match="holds no files"):
        empty.require_images()

    folder, count = make_folder_without_images(tmp_path)
    useless = scan_folder(folder)
    assert useless.summary() == {"files": count, "ok": 0, "skipped": count, "duplicates": 0}
    with pytest.raises(EmptyInputError) as raised:
        useless.require_images()
    assert str(raised.value) == (f"no usable images in {folder}: 0 of {count} files could be read; "
                                 "see the skipped list.")


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(InvalidInputError, match="is not a folder"):
        scan_folder(tmp_path / "nowhere")


def test_to_frame_has_one_row_per_record(corpus):
    _, _, image_set = corpus
    frame = image_set.to_frame()
    assert list(frame.columns) == ["path", "rel_path", "sha256", "size_bytes", "width", "height", "status",
                                   "reason", "duplicate_of"]
    assert len(frame) == len(image_set.records)
    assert (frame["status"] == "ok").sum() == len(image_set.ok)


def test_real_elpv_and_textile_images_scan_fine(elpv_images, textile_images):
    elpv = scan_folder(elpv_images).require_images()
    assert isinstance(elpv, ImageSet)
    assert elpv.summary() == {"files": 24, "ok": 24, "skipped": 0, "duplicates": 0}
    assert {(r.width, r.height) for r in elpv.ok} == {(300, 300)}
    array = np.asarray(open_image_rgb(elpv.paths[0]))
    assert array.shape == (300, 300, 3) and (array[..., 0] == array[..., 2]).all()
    textile = scan_folder(textile_images)
    assert len(textile.ok) == 12 and {r.rel_path.split("/")[0] for r in textile.ok} == {"global", "local",
                                                                                          "nominal"}
