"""Extracting uploaded zips: nothing is written outside the destination (traversal, absolute paths, links),
size, count and ratio limits hold, and a corrupt member or a file that is not a zip is refused with a reason."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from bad_inputs import encode, make_hostile_zip, pattern
from tac_core.errors import InvalidInputError
from tac_core.inputs.imageset import scan_folder
from tac_core.inputs.zips import extract_zip_safely


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def test_hostile_zip_never_writes_outside_the_destination(tmp_path):
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    archive = tmp_path / "hostile.zip"
    cases = make_hostile_zip(archive)
    dest = sandbox / "inner" / "dest"
    before = files_under(tmp_path)
    extracted, rejected = extract_zip_safely(archive, dest)

    created = files_under(tmp_path) - before - {dest, *dest.parents}
    assert created and all(dest in path.parents for path in created)
    assert not (tmp_path / "evil.png").exists() and not Path("/abs/evil.png").exists()
    reasons = dict(rejected)
    expected_paths = []
    for case in cases:
        if case.expected_status == "extracted":
            expected_paths.append(str(dest / case.extracted_as))
            assert case.rel_path not in reasons, case.name
        else:
            assert case.expected_reason in reasons[case.rel_path], case.name
    assert extracted == expected_paths
    assert len(extracted) + len(rejected) == len(cases)
    assert {p.name for p in dest.rglob("*") if p.is_file()} == {"ok.png", "bad_name_.png", "_CON.png"}
    assert len(scan_folder(dest).ok) == 1  # three copies of one image: the rest are duplicates


def test_zip_member_cannot_escape_through_a_link_already_in_the_destination(tmp_path):
    outside, dest = tmp_path / "outside", tmp_path / "dest"
    outside.mkdir()
    dest.mkdir()
    os.symlink(outside, dest / "photos")
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("photos/evil.png", b"x")
    extracted, rejected = extract_zip_safely(archive, dest)
    assert extracted == [] and rejected == [("photos/evil.png", "path leaves the folder (through a link)")]
    assert list(outside.iterdir()) == []


def test_zip_size_and_count_limits(tmp_path):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for index in range(4):
            zf.writestr(f"img_{index}.png", encode(pattern((8, 8), index), "PNG"))
    extracted, rejected = extract_zip_safely(archive, tmp_path / "by_count", max_files=2)
    assert len(extracted) == 2 and [reason for _, reason in rejected] == ["over the 2-file limit"] * 2
    extracted, rejected = extract_zip_safely(archive, tmp_path / "by_size", max_total_bytes=50)
    assert extracted == [] and all(reason == "over the 50 bytes size limit" for _, reason in rejected)


def test_corrupt_member_and_not_a_zip(tmp_path):
    archive = tmp_path / "crc.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.png", b"0123456789" * 10)
    data = archive.read_bytes()
    archive.write_bytes(data.replace(b"0123456789", b"9876543210", 1))
    extracted, rejected = extract_zip_safely(archive, tmp_path / "out")
    assert extracted == [] and rejected == [("a.png", "corrupt member")]
    assert list((tmp_path / "out").iterdir()) == []  # no half-written or temporary file left

    fake = tmp_path / "fake.zip"
    fake.write_text("not a zip")
    with pytest.raises(InvalidInputError, match="is not a readable zip archive"):
        extract_zip_safely(fake, tmp_path / "out")
