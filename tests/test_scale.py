"""The engine at scale, on small beds: approximate neighbours (recall, determinism, the switch-over), bounded
blocks, batched k-means++ seeding, chunked means, non-durable thumbnails, reduced JPEG decoding, placing new
images on a run's map. Speed itself is measured in ``bench/perf.py``, never asserted here."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tac_core import atomic
from tac_core.cluster import audit as audit_mod
from tac_core.cluster import audit_signals
from tac_core.embedding import image_encoding
from tac_core.cluster import kmeans
from tac_core.cluster import neighbors
from tac_core import numerics
from tac_core.inputs.image_decode import decode_rgb
from tac_core.cluster.kmeans import spherical_kmeans
from tac_core.cluster.neighbors import approximate_knn, block_rows, cosine_knn, exact_knn, recall_at_k
from tac_core.cluster.synthetic import make_clip_like_bed


@pytest.fixture(scope="module")
def points():
    """3,000 CLIP-like 64-d unit rows: 30 class × style blobs with noise, as neighbours see them."""
    return make_clip_like_bed(n_samples=3000, n_classes=10, dim=64, n_distractor_nouns=10, random_state=7).image_embeddings


def brute_force(x, k):
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


# --- neighbours -----------------------------------------------------------------------------------------
def test_blocks_stay_bounded_at_any_size():
    for n in (10, 5_000, 200_000, 1_000_000):
        rows = block_rows(n)
        assert 16 <= rows <= neighbors.MAX_BLOCK_ROWS
        assert rows * n <= max(neighbors.BLOCK_ELEMENTS, 16 * n)
    assert block_rows(200_000) * 200_000 * 4 <= 128 * 2**20  # a block of similarities: at most 128 MB


def test_exact_search_in_small_blocks_equals_brute_force(points, monkeypatch):
    monkeypatch.setattr(neighbors, "BLOCK_ELEMENTS", 50_000)  # 16 rows a block for 3,000 points
    x = points[:700]
    indices, sims = exact_knn(x, 5)
    expected_idx, expected_sims = brute_force(x, 5)
    np.testing.assert_allclose(sims, expected_sims, atol=1e-5)
    assert (indices == expected_idx).mean() > 0.99  # ties may come in another order
    assert not (indices == np.arange(700)[:, None]).any()
    rows = np.array([3, 699, 0])
    part_idx, part_sims = exact_knn(x, 5, rows=rows)
    np.testing.assert_array_equal(part_idx, indices[rows])


def test_approximate_search_reaches_the_recall_and_is_repeatable(points, monkeypatch):
    monkeypatch.setattr(neighbors, "APPROX_MIN_ROWS", 1000)  # the 3,000-point bed takes the approximate path
    assert neighbors.use_approximate(len(points), "cpu")
    assert not neighbors.use_approximate(len(points), "cpu", method="exact")
    indices, sims = cosine_knn(points, 20)
    _, true_sims = brute_force(points, 20)
    assert recall_at_k(sims, true_sims) >= 0.95
    assert not (indices == np.arange(len(points))[:, None]).any()  # never its own neighbour
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # best first
    np.testing.assert_allclose(sims, np.einsum("nd,nkd->nk", points, points[indices]), atol=1e-5)  # exact values
    again, _ = cosine_knn(points, 20)
    np.testing.assert_array_equal(indices, again)

    _, _, info = approximate_knn(points, 20)
    assert info.method == "approximate" and info.nlist == round(4 * np.sqrt(len(points)))
    assert info.recall >= 0.95 and info.sample == neighbors.RECALL_SAMPLE and info.nprobe >= neighbors.NPROBE_START


def test_approximate_search_handles_duplicates_tiny_lists_and_a_forced_nprobe(points):
    x = np.concatenate([points[:400], points[:400]])  # every point has an exact copy
    indices, sims, info = approximate_knn(x, 3, nlist=60, nprobe=1)
    assert info.nprobe == 1 and (indices >= 0).all()
    copy_of = np.concatenate([np.arange(400, 800), np.arange(400)])
    assert (indices[:, 0] == copy_of).mean() > 0.99  # the copy is the nearest neighbour
    assert not (indices == np.arange(800)[:, None]).any()
    k_all, _, _ = approximate_knn(points[:30], 50)  # k larger than the collection: clipped
    assert k_all.shape == (30, 29)


def test_audit_switches_to_the_approximate_search_above_the_threshold(points, monkeypatch):
    rng = np.random.default_rng(0)
    t = make_clip_like_bed(n_samples=3000, n_classes=10, dim=64, n_distractor_nouns=10, random_state=8).image_embeddings
    labels = rng.integers(0, 5, len(points))
    exact = audit_signals.neighbour_pass(points, t, 10, 5, "cpu")
    monkeypatch.setattr(neighbors, "APPROX_MIN_ROWS", 1000)
    calls = []
    original = neighbors.approximate_knn
    monkeypatch.setattr(audit_signals, "approximate_knn", lambda *a, **kw: calls.append(a[1]) or original(*a, **kw))
    approx = audit_signals.neighbour_pass(points, t, 10, 5, "cpu")
    assert calls == [10, 5]
    both = np.concatenate([points, t], axis=1) / np.sqrt(2)
    true_both = np.take_along_axis(both @ both.T, exact[0], axis=1)
    found_both = np.einsum("nd,nkd->nk", both, both[approx[0]])
    assert recall_at_k(found_both, true_both) >= 0.95
    assert recall_at_k(approx[2], exact[2]) >= 0.95
    result = audit_mod.audit(points, t, labels)
    assert result.score.shape == (len(points),) and np.isfinite(result.score).all()


# --- k-means ---------------------------------------------------------------------------------------------
def test_batched_seeding_draws_what_one_restart_at_a_time_would(points):
    x = torch.as_tensor(points)
    rng = np.random.default_rng(11)
    one_by_one = torch.cat([kmeans._kmeans_pp(x, 12, rng, 1) for _ in range(4)])
    together = kmeans._kmeans_pp(x, 12, np.random.default_rng(11), 4)
    torch.testing.assert_close(together, one_by_one, rtol=0, atol=0)
    again = kmeans._kmeans_pp(x, 12, np.random.default_rng(11), 4)
    assert torch.equal(together, again)
    repeated = torch.as_tensor(np.repeat(points[:3], 5, axis=0))  # 3 distinct points, 6 centres: no NaN weights
    assert torch.isfinite(kmeans._kmeans_pp(repeated, 6, np.random.default_rng(0), 2)).all()


def test_seeding_from_a_sample_keeps_the_objective_and_determinism(points, monkeypatch):
    full = spherical_kmeans(points, 30, n_init=2, random_state=4)
    monkeypatch.setattr(kmeans, "SEED_MIN_POINTS", 500)
    monkeypatch.setattr(kmeans, "SEED_POINTS_PER_CLUSTER", 8)  # seeds from 500 of the 3,000 points
    sampled = spherical_kmeans(points, 30, n_init=2, random_state=4)
    again = spherical_kmeans(points, 30, n_init=2, random_state=4)
    np.testing.assert_array_equal(sampled.labels, again.labels)
    assert sampled.objective > full.objective - 0.005


def test_scatter_and_one_hot_centre_updates_agree(points, monkeypatch):
    x = torch.as_tensor(points)
    labels = torch.as_tensor(np.random.default_rng(2).integers(0, 40, size=(len(points), 3)))
    best = torch.rand(len(points), 3)
    monkeypatch.setattr(kmeans, "SCATTER_MIN_CLUSTERS", 1)
    scatter = kmeans._update_centers(x, labels, best, 3, 40)
    monkeypatch.setattr(kmeans, "SCATTER_MIN_CLUSTERS", 10**9)
    one_hot = kmeans._update_centers(x, labels, best, 3, 40)
    torch.testing.assert_close(scatter, one_hot, atol=1e-5, rtol=1e-5)


def test_cluster_means_in_chunks_equal_one_pass(points, monkeypatch):
    labels = np.random.default_rng(3).integers(0, 7, len(points))
    whole = numerics.cluster_unit_means(points, labels, 8)
    monkeypatch.setattr(numerics, "CHUNK_ROWS", 97)
    chunked = numerics.cluster_unit_means(points, labels, 8)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    assert (chunked[7] == 0).all()  # the empty cluster


def test_unit_rows_are_used_as_they_are():
    x = torch.nn.functional.normalize(torch.randn(50, 8), dim=1)
    assert numerics.unit_rows(x) is x
    y = 3 * x
    torch.testing.assert_close(numerics.unit_rows(y), x)


# --- files -----------------------------------------------------------------------------------------------
def test_non_durable_writes_skip_fsync_but_stay_atomic(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(fd))
    atomic.write_bytes(tmp_path / "a.jpg", b"thumb", durable=False)
    assert synced == [] and (tmp_path / "a.jpg").read_bytes() == b"thumb"
    atomic.write_bytes(tmp_path / "b.npy", b"array")
    assert len(synced) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "b.npy"]  # no temporary file left


def test_jpeg_decodes_reduced_but_never_below_min_side(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8)).save(path, quality=90)
    full, size = decode_rgb(path)
    reduced, reduced_size = decode_rgb(path, min_side=448)
    assert size == reduced_size == (2000, 1500) and full.size == (2000, 1500)
    assert min(reduced.size) >= 448 and reduced.size[0] < 2000  # 1/2 or 1/4 scale
    png = tmp_path / "photo.png"
    full.save(png)
    assert decode_rgb(png, min_side=448)[0].size == (2000, 1500)  # no reduced decoding for PNG


def test_an_empty_thumbnail_is_made_again(tiny_model, elpv_images, tmp_path):
    paths = sorted(elpv_images.glob("*.png"))[:3]
    keys = ["a", "b", "c"]
    image_encoding.encode_images(tiny_model, paths, keys=keys, thumbnails_dir=tmp_path, num_workers=0)
    (tmp_path / "b.jpg").write_bytes(b"")  # what a power cut before the data reached the disk leaves
    assert not image_encoding.thumbnail_exists(tmp_path / "b.jpg")
    image_encoding.encode_images(tiny_model, paths, keys=keys, thumbnails_dir=tmp_path, num_workers=0)
    assert (tmp_path / "b.jpg").stat().st_size > 0
    with Image.open(tmp_path / "b.jpg") as thumb:
        assert max(thumb.size) == 256


def test_cpu_micro_batches_give_the_same_vectors(tiny_model, elpv_images, monkeypatch):
    paths = sorted(elpv_images.glob("*.png"))[:10]
    whole = image_encoding.encode_images(tiny_model, paths, batch_size=10, num_workers=0, precision="fp32").embeddings
    seen = []
    original = tiny_model.model.encode_image
    monkeypatch.setattr(tiny_model.model, "encode_image", lambda images: seen.append(len(images)) or original(images))
    monkeypatch.setattr(image_encoding, "CPU_MICRO_BATCH", 4)
    split = image_encoding.encode_images(tiny_model, paths, batch_size=10, num_workers=0, precision="fp32").embeddings
    assert seen == [4, 4, 2]
    np.testing.assert_allclose(split, whole, atol=1e-5)


# --- placing new images on a run's map ----------------------------------------------------------------------
def test_place_new_puts_a_near_copy_of_a_training_image_next_to_it(tmp_path, elpv_images, tiny_model_config,
                                                                  tiny_checkpoint, monkeypatch):
    from tac_core.workspace import ingest
    from tac_core.run import jobs
    from tac_core.run import params as run_params
    from tac_core.inputs import vocab_spec
    from tac_core.run.params import MAP_FOLDER
    from tac_core.cluster.projection import Projection
    from tac_core.run.run_map import place_new
    from tac_core.workspace.workspace import create_workspace

    monkeypatch.setenv(jobs.INLINE_ENV, "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ws = create_workspace("place", tmp_path / "data")
    try:
        ingest.add_folder(ws, elpv_images)
        spec = {**vocab_spec.default_spec(), "categories": ["noun.shape"], "templates": "photo1"}
        params = run_params.RunParams(model={"name": str(tiny_model_config), "pretrained": "openai",
                                         "checkpoint": str(tiny_checkpoint)}, vocab_set="small", vocab_spec=spec,
                                  n_clusters=3, projection="pca", seed=1, suggest_k=False)
        run_id = jobs.start_run(ws, params)
        assert ws.run(run_id)["status"] == "done", ws.run(run_id)["error"]
        saved = Projection.load(ws.run_dir(run_id) / MAP_FOLDER)
        coords = ws.load_run_array(run_id, "projection")
        np.testing.assert_allclose(saved.coordinates, coords)
        assert place_new(ws, run_id)[0].size == 0  # nothing new yet

        original = sorted(elpv_images.glob("*.png"))[5]
        later = tmp_path / "later"
        later.mkdir()
        pixels = np.array(Image.open(original).convert("L"))
        pixels[0, 0] = 255 - pixels[0, 0]  # a near copy: other bytes, (almost) the same picture
        Image.fromarray(pixels).save(later / "near_copy.png")
        shutil.copy(sorted(elpv_images.glob("*.png"))[6], later / "exact_copy.png")  # a duplicate: not usable
        ingest.add_folder(ws, later)
        ids, placed = place_new(ws, run_id)
        assert len(ids) == 1 and placed.shape == (1, 2)
        run_rows = ws.run_assignments(run_id)
        nearest = int(np.argmin(np.linalg.norm(coords - placed[0], axis=1)))
        assert run_rows["rel_path"].iloc[nearest] == original.name
        spread = np.linalg.norm(coords - coords.mean(axis=0), axis=1).mean()
        assert np.linalg.norm(coords[nearest] - placed[0]) < 0.05 * spread
        again_ids, again = place_new(ws, run_id, image_ids=ids)  # explicit ids, now from the cache
        np.testing.assert_allclose(again, placed, atol=1e-5)
    finally:
        ws.close()


# --- tokenising a vocabulary ---------------------------------------------------------------------------------
def test_joined_vocabulary_tokens_equal_the_tokenizer(tiny_model):
    from tac_core.inputs.prompts import TAC_TEMPLATES
    from tac_core.embedding.text_encoding import vocabulary_tokens
    from tac_core.inputs.vocabulary import Vocabulary

    tokenizer = tiny_model.tokenizer
    names = Vocabulary.wordnet().names[::10] + [
        "O.K.", "Ph.D.", "April Fools'", "café", "AT&T", "a <b> tag", "B-52", "o'clock", "'s-Hertogenbosch",
        "two  spaces", "3D", "C++", "x" * 400, "long " * 60, "Ünïcode", "tab\tinside"]
    templates = TAC_TEMPLATES + ("{}", "{}s are here", "a photo of a {}'s part.", "{} .")
    whole = tokenizer([t.format(n) for n in names for t in templates])
    joined = vocabulary_tokens(tokenizer, names, templates)
    assert joined.dtype == whole.dtype and torch.equal(joined, whole)


def test_other_tokenizers_tokenise_whole_prompts(tiny_model, monkeypatch):
    from tac_core.embedding.text_encoding import vocabulary_tokens

    calls = []

    class Other:
        def __call__(self, texts, context_length=None):
            calls.append(list(texts))
            return torch.zeros((len(texts), 77), dtype=torch.long)

    tokens = vocabulary_tokens(Other(), ["crack", "stain"], ("a {}.", "art of the {}."))
    assert calls == [["a crack.", "art of the crack.", "a stain.", "art of the stain."]] and tokens.shape == (4, 77)


def test_bf16_image_tower_is_close_to_fp32_and_chosen_by_name_or_environment(tiny_model, elpv_images, monkeypatch):
    from tac_core.errors import InvalidInputError

    paths = sorted(elpv_images.glob("*.png"))[:6]
    fp32 = image_encoding.encode_images(tiny_model, paths, num_workers=0, precision="fp32").embeddings
    bf16 = image_encoding.encode_images(tiny_model, paths, num_workers=0, precision="bf16").embeddings
    assert np.abs(bf16 - fp32).max() < 3e-2 and not np.array_equal(bf16, fp32)
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1, atol=1e-5)
    for amx, expected, name in ((False, fp32, "fp32"), (True, bf16, "bf16")):  # "auto" on the CPU: bf16 only
        monkeypatch.setattr(image_encoding, "cpu_has_amx", lambda amx=amx: amx)  # where AMX makes it fast
        default = image_encoding.encode_images(tiny_model, paths, num_workers=0)
        np.testing.assert_array_equal(default.embeddings, expected)
        assert default.precision == name
    monkeypatch.setenv(image_encoding.PRECISION_ENV, "fp32")  # the environment overrides "auto"
    np.testing.assert_array_equal(image_encoding.encode_images(tiny_model, paths, num_workers=0).embeddings, fp32)
    monkeypatch.setenv(image_encoding.PRECISION_ENV, "bf16")
    np.testing.assert_array_equal(image_encoding.encode_images(tiny_model, paths, num_workers=0).embeddings, bf16)
    monkeypatch.setenv(image_encoding.PRECISION_ENV, "fp8")
    with pytest.raises(InvalidInputError, match="TAC_STUDIO_IMAGE_PRECISION"):
        image_encoding.encode_images(tiny_model, paths, num_workers=0)
    with pytest.raises(InvalidInputError, match="precision"):
        image_encoding.encode_images(tiny_model, paths, num_workers=0, precision="half")
