"""Encoding images: real files embedded deterministically, failures reported, thumbnails from the same pass,
cached and duplicate images never encoded again, CPU micro-batches and the bf16 tower."""
import shutil

import numpy as np
import pytest
from PIL import Image

from tac_core.embedding import image_encoding
from tac_core.embedding.cache import VectorStore, sha256_file
from tac_core.errors import InvalidInputError
from tac_core.embedding.image_encoding import encode_images
from tac_core.inputs.thumbnails import thumbnail_path
from tac_core.progress import CancelToken, Cancelled


def test_real_images_are_embedded_deterministically(tiny_model, elpv_paths):
    first = encode_images(tiny_model, elpv_paths, batch_size=8, num_workers=0)
    assert first.failed == {} and first.ok.all()
    assert first.embeddings.shape == (len(elpv_paths), 32) and first.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first.embeddings, axis=1), 1, atol=1e-5)
    with_workers = encode_images(tiny_model, elpv_paths, batch_size=5, num_workers=2)
    np.testing.assert_allclose(with_workers.embeddings, first.embeddings, atol=1e-6)
    assert len(np.unique(first.embeddings.round(4), axis=0)) == len(elpv_paths)


def test_a_broken_file_is_reported_and_the_rest_embedded(tiny_model, elpv_paths, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(elpv_paths[0].read_bytes()[:300])
    paths = [elpv_paths[0], broken, elpv_paths[1], tmp_path / "missing.png"]
    result = encode_images(tiny_model, paths, batch_size=2, num_workers=0)
    assert sorted(result.failed) == [1, 3]
    assert "broken.png" in result.failed[1] and "missing.png" in result.failed[3]
    assert np.isnan(result.embeddings[[1, 3]]).all()
    assert result.ok.tolist() == [True, False, True, False]
    reference = encode_images(tiny_model, [elpv_paths[0], elpv_paths[1]], num_workers=0).embeddings
    np.testing.assert_allclose(result.embeddings[[0, 2]], reference, atol=1e-6)


def test_thumbnails_come_from_the_same_pass(tiny_model, textile_images, tmp_path):
    paths = sorted(textile_images.rglob("*.jpg"))
    thumbs = tmp_path / "thumbs"
    result = encode_images(tiny_model, paths, thumbnails_dir=thumbs, thumb_size=64, num_workers=0)
    assert result.failed == {}
    for path in paths:
        with Image.open(thumbnail_path(thumbs, sha256_file(path))) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) == 64


def test_cached_images_are_not_decoded_or_encoded(tiny_model, elpv_paths, tmp_path, count_forward, monkeypatch):
    store = VectorStore(tmp_path / "cache", 32)
    keys = [sha256_file(p) for p in elpv_paths]
    first = encode_images(tiny_model, elpv_paths, keys, store=store, batch_size=10, num_workers=0)
    assert count_forward == [10, 10, 4]
    assert len(list((tmp_path / "cache").glob("*.keys.txt"))) == 3  # one shard per batch

    monkeypatch.setattr(image_encoding, "open_image_rgb", lambda path: pytest.fail("decoded a cached image"))
    again = encode_images(tiny_model, elpv_paths, keys, store=store, num_workers=0)
    assert count_forward == [10, 10, 4]
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    assert first.precision in ("fp32", "bf16") and again.precision is None  # nothing encoded the second time


def test_duplicate_files_are_encoded_once(tiny_model, elpv_paths, tmp_path, count_forward):
    copy = tmp_path / "copy.png"
    shutil.copy(elpv_paths[0], copy)
    result = encode_images(tiny_model, [elpv_paths[0], copy, elpv_paths[1]], store=VectorStore(tmp_path / "c", 32))
    assert count_forward == [2]
    np.testing.assert_array_equal(result.embeddings[0], result.embeddings[1])


def test_progress_and_cancel(tiny_model, elpv_paths):
    seen = []
    encode_images(tiny_model, elpv_paths, batch_size=10, num_workers=0, progress=lambda *a: seen.append(a))
    assert seen == [(image_encoding.STAGE, done, 24) for done in (0, 10, 20, 24)]
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        encode_images(tiny_model, elpv_paths, num_workers=0, cancel=token)


def test_inputs_are_validated(tiny_model, elpv_paths, tmp_path):
    with pytest.raises(InvalidInputError, match="one key per path"):
        encode_images(tiny_model, elpv_paths, keys=["a"])
    with pytest.raises(InvalidInputError, match="length 8"):
        encode_images(tiny_model, elpv_paths, store=VectorStore(tmp_path, 8))
    with pytest.raises(InvalidInputError, match="thumbnail file"):
        encode_images(tiny_model, elpv_paths[:1], keys=["../escape"], thumbnails_dir=tmp_path)
    with pytest.raises(InvalidInputError, match="num_workers"):
        encode_images(tiny_model, elpv_paths, num_workers=-1)


def test_cpu_micro_batches_give_the_same_vectors(tiny_model, elpv_paths, monkeypatch):
    paths = elpv_paths[:10]
    whole = encode_images(tiny_model, paths, batch_size=10, num_workers=0, precision="fp32").embeddings
    seen = []
    original = tiny_model.model.encode_image
    monkeypatch.setattr(tiny_model.model, "encode_image", lambda images: seen.append(len(images)) or original(images))
    monkeypatch.setattr(image_encoding, "CPU_MICRO_BATCH", 4)
    split = encode_images(tiny_model, paths, batch_size=10, num_workers=0, precision="fp32").embeddings
    assert seen == [4, 4, 2]
    np.testing.assert_allclose(split, whole, atol=1e-5)


def test_bf16_image_tower_is_close_to_fp32_and_chosen_by_name_or_environment(tiny_model, elpv_paths, monkeypatch):
    paths = elpv_paths[:6]
    fp32 = encode_images(tiny_model, paths, num_workers=0, precision="fp32").embeddings
    bf16 = encode_images(tiny_model, paths, num_workers=0, precision="bf16").embeddings
    assert np.abs(bf16 - fp32).max() < 3e-2 and not np.array_equal(bf16, fp32)
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1, atol=1e-5)
    for amx, expected, name in ((False, fp32, "fp32"), (True, bf16, "bf16")):  # "auto" on the CPU: bf16 only
        monkeypatch.setattr(image_encoding, "cpu_has_amx", lambda amx=amx: amx)  # where AMX makes it fast
        default = encode_images(tiny_model, paths, num_workers=0)
        np.testing.assert_array_equal(default.embeddings, expected)
        assert default.precision == name
    monkeypatch.setenv(image_encoding.PRECISION_ENV, "fp32")  # the environment overrides "auto"
    np.testing.assert_array_equal(encode_images(tiny_model, paths, num_workers=0).embeddings, fp32)
    monkeypatch.setenv(image_encoding.PRECISION_ENV, "bf16")
    np.testing.assert_array_equal(encode_images(tiny_model, paths, num_workers=0).embeddings, bf16)
    monkeypatch.setenv(image_encoding.PRECISION_ENV, "fp8")
    with pytest.raises(InvalidInputError, match="TAC_STUDIO_IMAGE_PRECISION"):
        encode_images(tiny_model, paths, num_workers=0)
    with pytest.raises(InvalidInputError, match="precision"):
        encode_images(tiny_model, paths, num_workers=0, precision="half")
