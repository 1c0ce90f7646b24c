"""Embedding through the cache: only missing vectors are encoded, the model is not even loaded when nothing is
missing, caches are kept per model and template set, and unreadable files are reported."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tac_core.embedding import embed, text_encoding
from tac_core.embedding.cache import VectorStore, sha256_file
from tac_core.embedding.embed import cached_term_count, embed_images, embed_vocabulary, term_key
from tac_core.embedding.text_encoding import encode_vocabulary
from tac_core.errors import InvalidInputError
from tac_core.progress import CancelToken, Cancelled
from tac_core.inputs.vocabulary import Vocabulary


# -- images -----------------------------------------------------------------------------------------------
def test_embed_images_reruns_cost_no_model_work(tiny_spec, tiny_model, elpv_paths, tmp_path, count_forward,
                                                monkeypatch):
    monkeypatch.setattr(embed, "load_model", lambda spec, device: tiny_model)
    thumbs = tmp_path / "thumbs"
    first = embed_images(tiny_spec, elpv_paths, None, tmp_path / "cache", device="cpu", thumbnails_dir=thumbs)
    assert first.failed == {} and sum(count_forward) == len(elpv_paths)
    images_dir = embed.model_cache_dir(tiny_spec, tmp_path / "cache") / "images"
    assert len(VectorStore(images_dir, 32)) == len(elpv_paths)

    monkeypatch.setattr(embed, "load_model", lambda spec, device: pytest.fail("loaded the model for cached images"))
    keys = [sha256_file(p) for p in elpv_paths]
    again = embed_images(tiny_spec, elpv_paths[::-1], keys[::-1], tmp_path / "cache", thumbnails_dir=thumbs)
    np.testing.assert_array_equal(again.embeddings, first.embeddings[::-1])
    assert sum(count_forward) == len(elpv_paths)
    assert first.precision in ("fp32", "bf16") and again.precision is None


def test_embed_images_reports_unreadable_files(tiny_model, elpv_paths, tmp_path):
    paths = [elpv_paths[0], tmp_path / "missing.png", elpv_paths[1]]
    result = embed_images(tiny_model, paths, None, tmp_path / "cache")
    assert list(result.failed) == [1] and "cannot be read" in result.failed[1]
    assert result.ok.tolist() == [True, False, True]


# -- vocabularies -----------------------------------------------------------------------------------------
def test_embed_vocabulary_caches_by_model_and_templates(tiny_spec, tiny_model, tmp_path, monkeypatch):
    names = ["cat", " hairline  crack ", "dog", "cat"]
    first = embed_vocabulary(tiny_spec, names, "tac3", tmp_path, device="cpu", precision="fp32")
    expected = encode_vocabulary(tiny_model, [term_key(n) for n in names], "tac3")
    np.testing.assert_allclose(first, expected, atol=1e-6)

    model_dir = embed.model_cache_dir(tiny_spec, tmp_path)
    assert (model_dir / "identity.txt").read_text().strip() == tiny_spec.identity()
    assert len([p for p in model_dir.iterdir() if p.name.startswith("text-")]) == 1

    def no_model_work(*args, **kwargs):
        raise AssertionError("cached vocabulary must not load or run the model")

    monkeypatch.setattr(embed, "load_model", no_model_work)
    monkeypatch.setattr(text_encoding, "iter_vocabulary", no_model_work)
    np.testing.assert_array_equal(embed_vocabulary(tiny_spec, names[::-1], "tac3", tmp_path), first[::-1])

    monkeypatch.undo()
    spy = []
    original = text_encoding.iter_vocabulary
    monkeypatch.setattr(text_encoding, "iter_vocabulary", lambda loaded, chunk, *a, **k: spy.append(list(chunk))
                        or original(loaded, chunk, *a, **k))
    embed_vocabulary(tiny_model, ["cat", "bird"], "tac3", tmp_path)
    assert spy == [["bird"]]  # only the new term is encoded
    embed_vocabulary(tiny_model, ["cat"], "tac7", tmp_path)
    assert spy[-1] == ["cat"]  # another template set is another cache
    with pytest.raises(InvalidInputError, match="non-empty strings"):
        embed_vocabulary(tiny_model, ["cat", " "], "tac7", tmp_path)


def test_text_precision_auto_is_bf16_on_a_cpu_with_amx(tiny_model, tmp_path, monkeypatch):
    names = Vocabulary.wordnet(categories=["noun.shape"]).names[:200]
    monkeypatch.setattr(text_encoding, "cpu_has_amx", lambda: True)
    assert text_encoding.resolve_text_precision("auto", torch.device("cpu")) == "bf16"
    assert text_encoding.resolve_text_precision("auto", torch.device("cuda")) == "fp32"  # fp16 autocast there
    assert text_encoding.resolve_text_precision("bf16", torch.device("cpu"), truncatable=False) == "fp32"
    fast = embed_vocabulary(tiny_model, names, "tac3", tmp_path / "a")
    exact = encode_vocabulary(tiny_model, names, "tac3")
    assert 0 < np.abs(fast - exact).max() < 1e-2 and (fast * exact).sum(axis=1).min() > 0.999
    monkeypatch.setenv(text_encoding.PRECISION_ENV, "fp32")  # the environment overrides "auto"
    np.testing.assert_allclose(embed_vocabulary(tiny_model, names, "tac3", tmp_path / "b"), exact, atol=1e-6)
    monkeypatch.setenv(text_encoding.PRECISION_ENV, "fp8")
    with pytest.raises(InvalidInputError, match="TAC_STUDIO_TEXT_PRECISION"):
        embed_vocabulary(tiny_model, names, "tac3", tmp_path / "c")


def test_cached_term_count_reads_the_text_cache(tmp_path, tiny_spec):
    names = ["crack", "scratch", "stain"]
    assert cached_term_count(names, tiny_spec, "photo1", tmp_path) == 0
    embed_vocabulary(tiny_spec, names[:2], "photo1", tmp_path, device="cpu")
    assert cached_term_count(names + [" crack "], tiny_spec, "photo1", tmp_path) == 2
    assert cached_term_count(names, tiny_spec, "tac3", tmp_path) == 0  # other templates, other cache


def test_a_cancelled_vocabulary_keeps_every_term_it_encoded(tiny_spec, tmp_path, monkeypatch):
    """Issue 11, bug 1: a run cancelled at 1,243 terms restarted the vocabulary at 0 (the cache was written every
    2,048 terms). Now everything encoded before the cancel is kept, and writes every few seconds leave no more
    than one shard once the encoding ends."""
    names = Vocabulary.wordnet(categories=["noun.shape"]).names  # 328 terms
    token, reported = CancelToken(), []

    def progress(stage, done, total):
        reported.append(done)
        if done >= 150:
            token.cancel()
    monkeypatch.setattr(embed, "VOCABULARY_WRITE_S", 0.0)  # as if every batch took the write interval
    with pytest.raises(Cancelled):
        embed_vocabulary(tiny_spec, names, "tac7", tmp_path, device="cpu", batch_size=14, progress=progress,
                         cancel=token)
    assert 150 <= reported[-1] < len(names)
    assert cached_term_count(names, tiny_spec, "tac7", tmp_path) == reported[-1]  # nothing encoded was lost
    folder = embed.text_cache_dir(tiny_spec, "tac7", tmp_path)
    assert len(list(folder.glob("shard-*.npy"))) == 1  # the small shards were merged on the way out

    again = []
    embed_vocabulary(tiny_spec, names, "tac7", tmp_path, device="cpu", progress=lambda *a: again.append(a[1]))
    assert again[0] == reported[-1] and again[-1] == len(names)  # the rerun starts from the encoded count
    assert len(list(folder.glob("shard-*.npy"))) == 1


def test_vocabulary_cache_writes_are_timed_not_counted(tiny_spec, tmp_path, monkeypatch):
    """A killed process loses at most VOCABULARY_WRITE_S seconds of encoding: writes follow the clock."""
    names = Vocabulary.wordnet(categories=["noun.shape"]).names
    clock = iter(range(0, 10_000, 2))  # every look at the clock: 2 s later
    monkeypatch.setattr(embed.time, "monotonic", lambda: float(next(clock)))
    writes = []
    original = VectorStore.put_many
    monkeypatch.setattr(VectorStore, "put_many", lambda self, keys, vectors: writes.append(len(keys))
                        or original(self, keys, vectors))
    embed_vocabulary(tiny_spec, names, "photo1", tmp_path, device="cpu", batch_size=32)
    assert embed.VOCABULARY_WRITE_S == 3.0 and len(writes) > 3 and sum(writes) == len(names)
    assert max(writes[:-1]) <= 2 * 32  # every second batch of 32 names, not 2,048 at a time
