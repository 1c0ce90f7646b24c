"""The engine on a CUDA GPU agrees with the CPU on small beds (skipped without CUDA; bench/gpu_check.sh runs it).

Needs no elpv images and no weights: synthetic beds, the tiny test model and generated PNGs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tac_core.cluster.kmeans import spherical_kmeans
from tac_core.cluster.metrics import clustering_accuracy, evaluate
from tac_core.cluster.neighbors import approximate_knn, exact_knn, recall_at_k
from tac_core.cluster.synthetic import make_clip_like_bed
from tac_core.cluster.tac import TAC

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def bed():
    return make_clip_like_bed(n_samples=3000, n_classes=6, dim=64, n_distractor_nouns=2000, random_state=3)


@pytest.mark.parametrize("mode", ["free", "trained"])
def test_tac_on_cuda_agrees_with_the_cpu(bed, mode):
    kwargs = dict(mode=mode, epochs=5, random_state=0)
    cpu = TAC(bed.n_classes, device="cpu", **kwargs).fit(bed.image_embeddings, bed.vocab_embeddings)
    gpu = TAC(bed.n_classes, device="cuda", **kwargs).fit(bed.image_embeddings, bed.vocab_embeddings)
    again = TAC(bed.n_classes, device="cuda", **kwargs).fit(bed.image_embeddings, bed.vocab_embeddings)
    assert evaluate(bed.labels, gpu.labels_)["ACC"] > 80
    # the same clusters up to float rounding (which can tip a tie in k-means or a training step)
    assert clustering_accuracy(cpu.labels_, gpu.labels_) > (0.95 if mode == "free" else 0.9)
    assert clustering_accuracy(gpu.labels_, again.labels_) > 0.98  # repeatable on the device
    close = np.abs(gpu.counterparts_ - cpu.counterparts_).max(axis=1) < 1e-3
    assert close.mean() > 0.9


def test_kmeans_on_cuda_is_deterministic(bed):
    a = spherical_kmeans(bed.image_embeddings, 20, n_init=3, random_state=5, device="cuda")
    b = spherical_kmeans(bed.image_embeddings, 20, n_init=3, random_state=5, device="cuda")
    np.testing.assert_array_equal(a.labels, b.labels)


def test_neighbours_on_cuda(bed):
    x = bed.image_embeddings
    cpu_idx, cpu_sims = exact_knn(x, 10)
    gpu_idx, gpu_sims = exact_knn(x, 10, device="cuda")
    np.testing.assert_allclose(gpu_sims, cpu_sims, atol=1e-4)
    _, approx_sims, info = approximate_knn(x, 10, device="cuda")
    assert recall_at_k(approx_sims, cpu_sims) >= 0.95 and info.recall >= 0.95


def test_image_and_text_encoding_on_cuda_match_the_cpu(tiny_spec, tmp_path):
    from tac_core.embedding.image_encoding import encode_images
    from tac_core.embedding.models import load_model
    from tac_core.embedding.text_encoding import encode_texts

    rng = np.random.default_rng(0)
    paths = []
    for i in range(20):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (48 + i, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    cpu, gpu = load_model(tiny_spec, "cpu"), load_model(tiny_spec, "cuda")
    on_cpu = encode_images(cpu, paths, batch_size=8, num_workers=0).embeddings
    on_gpu = encode_images(gpu, paths, batch_size=8, num_workers=2).embeddings  # workers + fp16 autocast
    assert np.abs(on_gpu - on_cpu).max() < 2e-2
    texts = ["a photo of a cat.", "itap of a hairline crack.", "art of the delamination.", "x"]
    assert np.abs(encode_texts(gpu, texts) - encode_texts(cpu, texts)).max() < 2e-2


def test_jpegs_decoded_on_the_gpu_embed_like_pil(tiny_spec, tmp_path, monkeypatch):
    """nvJPEG and resizing on the device (tac_core.embedding.device_decode) against PIL on the same GPU: every JPEG
    took the device path, the rest did not, and the embeddings agree (a level or two of pixel difference)."""
    from tac_core.embedding import device_decode
    from tac_core.embedding.image_encoding import encode_images
    from tac_core.embedding.models import load_model

    rng = np.random.default_rng(1)
    paths = []
    for i in range(24):
        path = tmp_path / f"img{i}.{'jpg' if i % 4 else 'png'}"
        smooth = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(smooth).resize((640 + 8 * i, 480), Image.BICUBIC).save(path)
        paths.append(path)
    gpu = load_model(tiny_spec, "cuda")
    assert device_decode.nvjpeg_works("cuda")
    monkeypatch.setenv(device_decode.ENV, "off")
    with_pil = encode_images(gpu, paths, batch_size=8, num_workers=2).embeddings
    decoded = []
    original = device_decode.DeviceJpegDecoder.decode
    monkeypatch.setattr(device_decode.DeviceJpegDecoder, "decode",
                        lambda self, datas, device: decoded.extend(datas) or original(self, datas, device))
    monkeypatch.setenv(device_decode.ENV, "auto")
    on_gpu = encode_images(gpu, paths, batch_size=8, num_workers=2).embeddings
    assert len(decoded) == 18
    assert (on_gpu * with_pil).sum(axis=1).min() > 0.999
