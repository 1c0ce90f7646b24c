"""Thumbnails: named by content key, written atomically without fsync, and made again when a power cut left
one empty. (Ingest making them once: tests/test_ingest.py; the embedding pass making them: test_image_encoding.)"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tac_core import atomic
from tac_core.embedding import image_encoding
from tac_core.errors import InvalidInputError
from tac_core.inputs.thumbnails import check_thumbnail_keys, thumbnail_exists, thumbnail_path, write_thumbnail


def test_a_thumbnail_fits_its_size_and_is_written_without_fsync(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(fd))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 600, 3), dtype=np.uint8))
    path = thumbnail_path(tmp_path, "abc123")
    assert path == tmp_path / "abc123.jpg" and not thumbnail_exists(path)
    write_thumbnail(image, path, 128)
    assert thumbnail_exists(path) and synced == []
    with Image.open(path) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (128, 64)
    assert [p.name for p in tmp_path.iterdir()] == ["abc123.jpg"]


def test_keys_that_cannot_name_a_file_are_refused():
    check_thumbnail_keys(["a" * 64, "key_1.v2-x", None])
    for bad in ("../escape", "a/b", "", "sp ace"):
        with pytest.raises(InvalidInputError, match="cannot name a thumbnail file"):
            check_thumbnail_keys([bad])


def test_an_empty_thumbnail_is_made_again(tiny_model, elpv_images, tmp_path):
    paths = sorted(elpv_images.glob("*.png"))[:3]
    keys = ["a", "b", "c"]
    image_encoding.encode_images(tiny_model, paths, keys=keys, thumbnails_dir=tmp_path, num_workers=0)
    (tmp_path / "b.jpg").write_bytes(b"")  # what a power cut before the data reached the disk leaves
    assert not thumbnail_exists(tmp_path / "b.jpg")
    image_encoding.encode_images(tiny_model, paths, keys=keys, thumbnails_dir=tmp_path, num_workers=0)
    assert (tmp_path / "b.jpg").stat().st_size > 0
    with Image.open(tmp_path / "b.jpg") as thumb:
        assert max(thumb.size) == 256
