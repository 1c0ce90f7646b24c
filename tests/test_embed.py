"""Embedding through the cache: only missing vectors are encoded, the model is not even loaded when nothing is
missing, caches are kept per model and template set, and unreadable files are reported."""
from __future__ import annotations

import numpy as np
import pytest

from tac_core.embedding import embed
from tac_core.embedding.cache import VectorStore, sha256_file
from tac_core.embedding.embed import cached_term_count, embed_images, embed_vocabulary, term_key
from tac_core.embedding.text_encoding import encode_vocabulary
from tac_core.errors import InvalidInputError


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
    first = embed_vocabulary(tiny_spec, names, "tac3", tmp_path, device="cpu")
    expected = encode_vocabulary(tiny_model, [term_key(n) for n in names], "tac3")
    np.testing.assert_allclose(first, expected, atol=1e-6)

    model_dir = embed.model_cache_dir(tiny_spec, tmp_path)
    assert (model_dir / "identity.txt").read_text().strip() == tiny_spec.identity()
    assert len([p for p in model_dir.iterdir() if p.name.startswith("text-")]) == 1

    def no_model_work(*args, **kwargs):
        raise AssertionError("cached vocabulary must not load or run the model")

    monkeypatch.setattr(embed, "load_model", no_model_work)
    monkeypatch.setattr(embed, "encode_vocabulary", no_model_work)
    np.testing.assert_array_equal(embed_vocabulary(tiny_spec, names[::-1], "tac3", tmp_path), first[::-1])

    monkeypatch.undo()
    spy = []
    monkeypatch.setattr(embed, "encode_vocabulary", lambda loaded, chunk, *a, **k: spy.append(list(chunk))
                        or encode_vocabulary(loaded, chunk, *a, **k))
    embed_vocabulary(tiny_model, ["cat", "bird"], "tac3", tmp_path)
    assert spy == [["bird"]]  # only the new term is encoded
    embed_vocabulary(tiny_model, ["cat"], "tac7", tmp_path)
    assert spy[-1] == ["cat"]  # another template set is another cache
    with pytest.raises(InvalidInputError, match="non-empty strings"):
        embed_vocabulary(tiny_model, ["cat", " "], "tac7", tmp_path)


def test_cached_term_count_reads_the_text_cache(tmp_path, tiny_spec):
    names = ["crack", "scratch", "stain"]
    assert cached_term_count(names, tiny_spec, "photo1", tmp_path) == 0
    embed_vocabulary(tiny_spec, names[:2], "photo1", tmp_path, device="cpu")
    assert cached_term_count(names + [" crack "], tiny_spec, "photo1", tmp_path) == 2
    assert cached_term_count(names, tiny_spec, "tac3", tmp_path) == 0  # other templates, other cache
