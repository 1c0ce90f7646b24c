"""Atomic file writes: a failed write leaves the old file and no temporary one; non-durable writes skip the
flush to disk. (The exports built on them: tests/test_export.py.)"""
from __future__ import annotations

import numpy as np
import pytest

from tac_core import atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    dest = tmp_path / "sub" / "labels.json"
    atomic.write_json(dest, {"b": 1, "a": [1, 2]})
    assert dest.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    with pytest.raises(OSError, match="No space"):
        with atomic.atomic_path(dest) as tmp:
            tmp.write_text("{half")
            raise OSError("No space left on device")
    assert dest.read_text().startswith('{\n  "a"') and [p.name for p in dest.parent.iterdir()] == ["labels.json"]
    atomic.write_npy(tmp_path / "a.npy", np.arange(3))
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.arange(3))


def test_non_durable_writes_skip_fsync_but_stay_atomic(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(fd))
    atomic.write_bytes(tmp_path / "a.jpg", b"thumb", durable=False)
    assert synced == [] and (tmp_path / "a.jpg").read_bytes() == b"thumb"
    atomic.write_bytes(tmp_path / "b.npy", b"array")
    assert len(synced) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "b.npy"]  # no temporary file left
