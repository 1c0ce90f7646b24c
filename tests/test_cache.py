import hashlib

import numpy as np
import pytest

from tac_core.embedding.cache import VectorStore, sha256_file
from tac_core.errors import InvalidInputError


def _vectors(n, dim=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_round_trip_and_reopen(tmp_path):
    store = VectorStore(tmp_path, 4)
    vectors = _vectors(3)
    assert store.put_many(["a", "b", "c"], vectors) == 3
    assert len(store) == 3 and "b" in store and "z" not in store

    got, missing = store.get_many(["c", "z", "a"])
    assert missing == ["z"]
    np.testing.assert_array_equal(got[[0, 2]], vectors[[2, 0]])
    assert np.isnan(got[1]).all() and got.dtype == np.float32

    reopened = VectorStore(tmp_path, 4)
    np.testing.assert_array_equal(reopened.get_many(["a", "b", "c"])[0], vectors)


def test_a_key_is_written_once(tmp_path):
    store = VectorStore(tmp_path, 4)
    first = _vectors(2)
    store.put_many(["a", "b"], first)
    assert store.put_many(["a", "c", "c"], _vectors(3, seed=1)) == 1
    assert store.put_many(["a"], _vectors(1, seed=2)) == 0
    np.testing.assert_array_equal(store.get_many(["a"])[0][0], first[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "shard-00001.keys.txt", "shard-00001.npy", "shard-00002.keys.txt", "shard-00002.npy",
    ]


def test_incomplete_or_corrupt_shards_are_ignored_with_a_warning(tmp_path):
    store = VectorStore(tmp_path, 4)
    store.put_many(["good"], _vectors(1))
    np.save(tmp_path / "shard-00002.npy", _vectors(2))  # crash before its keys file was written
    np.save(tmp_path / "shard-00003.npy", _vectors(2))
    (tmp_path / "shard-00003.keys.txt").write_text("only-one-key\n")  # count does not match
    (tmp_path / "shard-00004.npy").write_bytes(b"not an npy file")
    (tmp_path / "shard-00004.keys.txt").write_text("x\n")
    np.save(tmp_path / "shard-00005.npy", _vectors(1, dim=8))
    (tmp_path / "shard-00005.keys.txt").write_text("wrong-dim\n")

    with pytest.warns(UserWarning) as caught:
        reopened = VectorStore(tmp_path, 4)
    assert len(caught) == 4
    assert "keys file is missing" in str(caught[0].message)
    assert len(reopened) == 1 and "good" in reopened

    reopened.put_many(["new"], _vectors(1))  # new shards never reuse a number
    assert (tmp_path / "shard-00006.keys.txt").read_text() == "new\n"


def test_a_reader_sees_shards_written_by_another_store(tmp_path):
    reader = VectorStore(tmp_path, 4)
    writer = VectorStore(tmp_path, 4)
    vectors = _vectors(2)
    writer.put_many(["a", "b"], vectors)
    got, missing = reader.get_many(["b", "a"])
    assert missing == []
    np.testing.assert_array_equal(got, vectors[::-1])


def test_compact_merges_small_shards_and_readers_keep_every_key(tmp_path, recwarn):
    store = VectorStore(tmp_path, 4)
    vectors = _vectors(9)
    big = VectorStore(tmp_path, 4)
    for start in range(0, 9, 2):  # five small shards, as a vocabulary written every few seconds leaves
        store.put_many([f"k{i}" for i in range(start, min(start + 2, 9))], vectors[start:start + 2])
    store.put_many(["k0", "extra"], _vectors(2, seed=5))  # k0 is stored already: its first vector stays
    older_reader = VectorStore(tmp_path, 4)  # has every shard in memory before the merge
    assert store.compact(below=3) == 6
    shards = sorted(p.name for p in tmp_path.glob("shard-*.npy"))
    assert shards == ["shard-00007.npy"] and len((tmp_path / "shard-00007.keys.txt").read_text().split()) == 10
    keys = [f"k{i}" for i in range(9)]
    for reader in (store, older_reader, VectorStore(tmp_path, 4), big):  # big listed no shard before the merge
        got, missing = reader.get_many(keys + ["extra"])
        assert missing == [] and np.array_equal(got[:9], vectors)
    assert store.compact(below=3) == 0 and store.compact() == 0  # one shard left: nothing to merge
    assert not recwarn.list  # shards removed under a reader are skipped silently


@pytest.mark.parametrize(
    "keys, vectors, message",
    [
        (["a", "b"], _vectors(3), "Expected 2 vectors of length 4"),
        (["a"], _vectors(1, dim=3), "Expected 1 vectors of length 4"),
        (["two\nlines"], _vectors(1), "one-line"),
        ([""], _vectors(1), "non-empty"),
        (["a"], np.full((1, 4), np.nan, dtype=np.float32), "non-finite"),
    ],
)
def test_bad_puts_are_refused(tmp_path, keys, vectors, message):
    store = VectorStore(tmp_path, 4)
    with pytest.raises(InvalidInputError, match=message):
        store.put_many(keys, vectors)
    assert len(store) == 0 and not list(tmp_path.glob("*.keys.txt"))


def test_dim_must_be_positive(tmp_path):
    with pytest.raises(InvalidInputError, match="positive integer"):
        VectorStore(tmp_path, 0)


def test_sha256_file(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
