"""Hardening, parameters and vocabulary: every bad value gets one clear message naming the problem, at the engine,
CLI, job and page level, and nothing is half-written. The table of cases is in docs/HARDENING.md."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import open_app
from bad_inputs import encode, pattern
from tac_core.workspace import ingest
from tac_core.run import jobs
from tac_core.run import params as run_params
from tac_core.inputs import vocab_spec
from tac_core.embedding.cache import VectorStore
from tac_core.run.cli import main as cli_main
from tac_core.embedding.embed import embed_images, embed_vocabulary, model_cache_dir
from tac_core.errors import EmptyInputError, InvalidInputError
from tac_core.embedding.models import ModelSpec
from tac_core.cluster.tac import TAC
from tac_core.inputs.vocabulary import Vocabulary
from tac_core.workspace.workspace import create_workspace

LONG_TERM = "crack " * 83 + "xx"  # 500 characters


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- engine: K, images, embeddings ------------------------------------------------------------------------
X, V = unit_rows(12, 8), unit_rows(30, 8, seed=1)


def with_row(array: np.ndarray, row: int, value: float) -> np.ndarray:
    array = array.copy()
    array[row, 0] = value
    return array


@pytest.mark.parametrize("k, x, v, error, message", [
    (1, X, V, InvalidInputError, "K must be an integer of at least 2; got 1"),
    (0, X, V, InvalidInputError, "at least 2; got 0"),
    (-3, X, V, InvalidInputError, "at least 2; got -3"),
    (2.5, X, V, InvalidInputError, "integer of at least 2; got 2.5"),
    (True, X, V, InvalidInputError, "integer of at least 2; got True"),
    (13, X, V, InvalidInputError, r"K = 13 is larger than the number of images \(12\)"),
    (2, X[:1], V, EmptyInputError, "at least 2 images; got 1"),
    (2, X[:0], V, InvalidInputError, "non-empty 2-D array"),
    (2, with_row(X, 4, np.nan), V, InvalidInputError, "image embeddings has NaN or infinite values in 1 row.*row 4"),
    (2, with_row(X, 5, np.inf), V, InvalidInputError, "NaN or infinite.*row 5"),
    (2, X, with_row(V, 3, -np.inf), InvalidInputError, "vocabulary embeddings has NaN or infinite.*row 3"),
    (2, X, V[:, :6], InvalidInputError, "8 dimensions but vocabulary embeddings have 6; both must come from the same"),
    (2, np.where(np.arange(12)[:, None] == 2, 0, X), V, InvalidInputError, "all-zero row at 2"),
    (2, X[:, 0], V, InvalidInputError, "2-D array"),
])
def test_engine_refuses_bad_k_and_bad_embeddings(k, x, v, error, message):
    with pytest.raises(error, match=message):
        TAC(k, random_state=0).fit(x, v)


def test_engine_k_equal_to_the_number_of_images_gives_singletons():
    labels = TAC(12, random_state=0).fit(X, V).labels_
    assert sorted(labels.tolist()) == list(range(12))


# -- engine: vocabulary -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, data, error, message", [
    ("empty.txt", b"", EmptyInputError, "holds no terms"),
    ("comments.txt", b"# nothing\n\n   \n", EmptyInputError, "holds no terms"),
    ("long.txt", f"crack\n{LONG_TERM}\n".encode(), InvalidInputError, "line 2 of long.txt is 500 characters long; "
                                                                      "terms may have at most 200"),
    ("bell.txt", b"crack\nst\x07ain\n", InvalidInputError, "line 2 of bell.txt contains the control character "
                                                             "U\\+0007"),
    ("ansi.txt", b"\x1b[31mred\n", InvalidInputError, "control character U\\+001B"),
    ("nul.txt", b"cr\x00ack\n", InvalidInputError, "control character U\\+0000"),
    ("latin1.csv", "term\ncaf\xe9\n".encode("latin-1"), InvalidInputError,
     "latin1.csv: is not UTF-8 text \\(byte 0xe9"),
    ("utf16.txt", "crack\n".encode("utf-16"), InvalidInputError, "utf16.txt: is not UTF-8 text \\(byte 0xff"),
    ("image.csv", encode(pattern((8, 8), 1), "PNG"), InvalidInputError, "image.csv: is not UTF-8 text"),
    ("columns.csv", b"label,note\ncrack,x\n", InvalidInputError, "no 'term' column"),
    ("wide.csv", b"crack,a,b\n", InvalidInputError, "line 1 has 3 columns"),
    ("nul.csv", b"term\ncr\x00ack\n", InvalidInputError, "control character U\\+0000|not a readable CSV"),
    ("quote.csv", b'term\n"crack\nstain\n', InvalidInputError, "control character U\\+000A"),
    ("terms.xlsx", b"PK\x03\x04", InvalidInputError, "must come from a .txt file"),
    ("terms.json", b"[]", InvalidInputError, "terms.json.*.txt.*.csv"),
    ("header.csv", b"term,note\n", EmptyInputError, "header.csv.*no terms"),
    ("blank.csv", b"term,note\n,orphan note\n", InvalidInputError, "line 2 of blank.csv is empty"),
])
def test_bad_term_files_are_refused_with_the_file_and_line(tmp_path, name, data, error, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(error, match=message):
        Vocabulary.load_terms_file(path)
    with pytest.raises(error, match=message):
        vocab_spec.read_terms_file(name, data)  # the page's import: the same rule, naming the uploaded file


def test_duplicate_terms_are_kept_once():
    vocab = Vocabulary.from_terms(["crack", "Crack", "  crack ", "crack_", "hairline  crack", "Hairline_Crack"])
    assert vocab.names == ["crack", "hairline crack"]
    spec, added, already = vocab_spec.add_domain_terms(vocab_spec.default_spec(), ["dent", "DENT", "dent "])
    assert added == 1 and already == ["DENT", "dent"] and [t["term"] for t in spec["domain_terms"]] == ["dent"]
    spec = vocab_spec.validate_spec({"domain_terms": ["dent", "Dent"], "disabled": ["x", "X"]})
    assert [t["term"] for t in spec["domain_terms"]] == ["dent"] and spec["disabled"] == ["x"]


@pytest.mark.parametrize("spec, error, message", [
    ({"wordnet": False}, EmptyInputError, "every term of this vocabulary set is switched off or filtered out"),
    ({"wordnet": False, "domain_terms": ["dent"], "disabled": ["Dent"]}, EmptyInputError, "switched off"),
    ({"domain_terms": [LONG_TERM]}, InvalidInputError, "domain term 1 is 500 characters long"),
    ({"domain_terms": ["a\tb"]}, InvalidInputError, "control character U\\+0009"),
    ({"domain_terms": [""]}, InvalidInputError, "domain term 1 is empty"),
    ({"domain_terms": [{"term": 3}]}, InvalidInputError, "is 3, not text"),
])
def test_bad_vocabulary_sets_are_refused(spec, error, message):
    with pytest.raises(error, match=message):
        vocab_spec.build_vocabulary(spec)


# -- engine: cached embeddings ----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["wrong dimension", "NaN", "infinite", "float64"])
def test_a_damaged_or_foreign_cache_shard_is_never_mixed_in(tmp_path, tiny_spec, elpv_images, damage):
    paths = sorted(elpv_images.iterdir())[:6]
    clean = embed_images(tiny_spec, paths, None, tmp_path / "clean", device="cpu").embeddings
    from tac_core.embedding.cache import sha256_file

    keys = [sha256_file(p) for p in paths]
    folder = model_cache_dir(tiny_spec, tmp_path / "cache") / "images"
    folder.mkdir(parents=True)
    bad = {"wrong dimension": np.ones((6, 16), np.float32), "NaN": np.full((6, 32), np.nan, np.float32),
           "infinite": np.full((6, 32), np.inf, np.float32), "float64": clean.astype(np.float64)}[damage]
    np.save(folder / "shard-00001.npy", bad)
    (folder / "shard-00001.keys.txt").write_text("".join(f"{k}\n" for k in keys))
    with pytest.warns(UserWarning, match="Ignoring cache shard"):
        result = embed_images(tiny_spec, paths, keys, tmp_path / "cache", device="cpu")
    assert result.failed == {}
    np.testing.assert_allclose(result.embeddings, clean, atol=1e-5)  # encoded again, not read from the shard
    with pytest.warns(UserWarning, match="Ignoring cache shard"):
        store = VectorStore(folder, 32)  # a new reader also skips it, and finds the vectors encoded again
    cached, missing = store.get_many(keys)
    assert missing == [] and np.allclose(cached, clean, atol=1e-5)


def test_a_foreign_text_cache_shard_is_never_mixed_in(tmp_path, tiny_spec):
    names = ["crack", "stain", "scratch"]
    clean = embed_vocabulary(tiny_spec, names, "photo1", tmp_path / "clean", device="cpu")
    embed_vocabulary(tiny_spec, names, "photo1", tmp_path / "cache", device="cpu")
    folder = next((model_cache_dir(tiny_spec, tmp_path / "cache")).glob("text-*"))
    for shard in folder.glob("shard-*.npy"):
        np.save(shard, np.full((3, 32), np.nan, np.float32))  # damaged on disk after it was written
    with pytest.warns(UserWarning, match="NaN or infinite"):
        again = embed_vocabulary(tiny_spec, names, "photo1", tmp_path / "cache", device="cpu")
    np.testing.assert_allclose(again, clean, atol=1e-5)


# -- CLI ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, elpv_images):
    folder = tmp_path_factory.mktemp("cli-params")
    np.save(folder / "X.npy", unit_rows(20, 8))
    np.save(folder / "V.npy", unit_rows(10, 8, seed=1))
    np.save(folder / "V16.npy", unit_rows(10, 16, seed=1))
    np.save(folder / "Xnan.npy", with_row(unit_rows(20, 8), 5, np.nan))
    np.save(folder / "Xinf.npy", with_row(unit_rows(20, 8), 3, np.inf))
    np.save(folder / "Xcomplex.npy", unit_rows(20, 8).astype(np.complex64))
    np.save(folder / "X1.npy", unit_rows(1, 8))
    names = [f"term{i}" for i in range(10)]
    for stem, change in (("names", None), ("dup", (3, "Term1")), ("blank", (3, "")), ("bell", (3, "a\x07b")),
                         ("long", (3, LONG_TERM))):
        lines = list(names)
        if change:
            lines[change[0]] = change[1]
        (folder / f"{stem}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "latin1.txt").write_bytes("\n".join(names).replace("term1", "caf\xe9").encode("latin-1"))
    (folder / "terms.txt").write_text("crack\nstain\n")
    (folder / "long_terms.txt").write_text(f"crack\n{LONG_TERM}\n")
    (folder / "bad_columns.csv").write_text("label,note\ncrack,x\n")
    (folder / "utf16.csv").write_bytes("term\ncrack\n".encode("utf-16"))
    (folder / "empty.txt").write_text("# nothing\n")
    return folder


EMB = ["--image-embeddings", "{f}/X.npy", "--vocab-embeddings", "{f}/V.npy", "--vocab", "{f}/names.txt"]
IMG = ["--images", "{elpv}", "--model", "{config}", "--checkpoint", "{ckpt}", "--cache", "{out}/cache"]


@pytest.mark.parametrize("args, message", [
    (EMB + ["--k", "0"], "--k (the clusters) must be at least 2; got 0"),
    (EMB + ["--k", "-4"], "--k (the clusters) must be at least 2; got -4"),
    (EMB + ["--k", "2", "--seed", "-1"], "--seed (the random seed) must be at least 0; got -1"),
    (EMB + ["--k", "2", "--mode", "trained", "--epochs", "0"], "--epochs (the training epochs) must be at least 1"),
    (EMB + ["--k", "21"], "K = 21 is larger than the number of images (20)"),
    (["--image-embeddings", "{f}/X1.npy"] + EMB[2:] + ["--k", "2"], "clustering needs at least 2 images; got 1"),
    (["--image-embeddings", "{f}/Xnan.npy"] + EMB[2:] + ["--k", "2"],
     "Xnan.npy has NaN or infinite values (or values too large for float32) in 1 row(s), first at row 5"),
    (["--image-embeddings", "{f}/Xinf.npy"] + EMB[2:] + ["--k", "2"], "Xinf.npy has NaN or infinite values"),
    (["--image-embeddings", "{f}/Xcomplex.npy"] + EMB[2:] + ["--k", "2"], "2-D array of real numbers"),
    (EMB[:2] + ["--vocab-embeddings", "{f}/V16.npy"] + EMB[4:] + ["--k", "2"],
     "image embeddings have 8 dimensions but vocabulary embeddings have 16"),
    (EMB[:4] + ["--vocab", "{f}/dup.txt", "--k", "2"], "line 4 of {f}/dup.txt repeats the name 'Term1' of line 2"),
    (EMB[:4] + ["--vocab", "{f}/blank.txt", "--k", "2"], "line 4 of {f}/blank.txt is empty"),
    (EMB[:4] + ["--vocab", "{f}/bell.txt", "--k", "2"], "contains the control character U+0007"),
    (EMB[:4] + ["--vocab", "{f}/long.txt", "--k", "2"], "is 500 characters long; terms may have at most 200"),
    (EMB[:4] + ["--vocab", "{f}/latin1.txt", "--k", "2"], "could not be read as UTF-8 text"),
    (IMG + ["--vocab", "{f}/terms.txt", "--k", "25"], "K = 25 is larger than the number of images (24)"),
    (IMG + ["--vocab", "{f}/long_terms.txt", "--k", "2"], "line 2 of long_terms.txt is 500 characters long"),
    (IMG + ["--vocab", "{f}/bad_columns.csv", "--k", "2"], "has a 'note' column but no 'term' column"),
    (IMG + ["--vocab", "{f}/utf16.csv", "--k", "2"], "is not UTF-8 text"),
    (IMG + ["--vocab", "{f}/empty.txt", "--k", "2"], "holds no terms"),
    (IMG + ["--vocab-categories", "noun.nonsense", "--k", "2"], "Unknown WordNet categories ['noun.nonsense']"),
])
def test_cli_refuses_bad_values_in_one_line_and_writes_nothing(args, message, cli_files, elpv_images, tmp_path,
                                                               tiny_model_config, tiny_checkpoint, capsys):
    values = {"f": cli_files, "elpv": elpv_images, "config": tiny_model_config, "ckpt": tiny_checkpoint,
              "out": tmp_path}
    argv = ["cluster", *(a.format(**values) for a in args), "--out", str(tmp_path / "out")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message.format(**values) in err[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()  # refused before any work


# -- jobs and pages ---------------------------------------------------------------------------------------
def tiny_params(tiny_model_config, tiny_checkpoint, **changes) -> dict:
    options = dict(model={"name": str(tiny_model_config), "checkpoint": str(tiny_checkpoint)}, vocab_set="s",
                   vocab_spec={"wordnet": False, "domain_terms": ["crack", "stain", "scratch"], "templates": "photo1"},
                   n_clusters=2, projection="pca", suggest_k=False)
    options.update(changes)
    return options


def few_images(ws, folder: Path, n: int) -> None:
    folder.mkdir()
    for i in range(n):
        (folder / f"img{i}.png").write_bytes(encode(pattern((24, 24), 400 + i), "PNG"))
    ingest.add_folder(ws, folder)


@pytest.mark.parametrize("changes, error, message", [
    ({"n_clusters": 1}, InvalidInputError, "n_clusters must be a whole number of at least 2; got 1"),
    ({"n_clusters": 2.0}, InvalidInputError, "n_clusters must be a whole number"),
    ({"n_clusters": 5}, InvalidInputError, "K = 5 is more than the 4 usable images"),
    ({"seed": -1}, InvalidInputError, "seed must be a whole number of at least 0"),
    ({"batch_size": 0}, InvalidInputError, "batch_size must be a whole number of at least 1"),
    ({"vocab_spec": {"wordnet": False, "domain_terms": ["dent"], "disabled": ["dent"]}}, EmptyInputError,
     "every term of this vocabulary set is switched off"),
    ({"vocab_spec": {"wordnet": False}}, EmptyInputError, "switched off or filtered out"),
    ({"vocab_spec": {"domain_terms": [LONG_TERM]}}, InvalidInputError, "500 characters long"),
    ({"vocab_spec": {"domain_terms": ["ok", "a\x1bb"]}}, InvalidInputError, "domain term 2 .*control character"),
    ({"model": {"name": ""}}, InvalidInputError, "empty"),
])
def test_a_run_with_a_bad_value_is_refused_before_it_exists(app_data, tmp_path, tiny_model_config, tiny_checkpoint,
                                                            changes, error, message):
    ws = create_workspace("params", app_data)
    few_images(ws, tmp_path / "imgs", 4)
    with pytest.raises(error, match=message):
        jobs.start_run(ws, run_params.RunParams(**tiny_params(tiny_model_config, tiny_checkpoint, **changes)))
    assert ws.runs().empty and not any((ws.path / "runs").iterdir())
    ws.close()


def test_a_run_with_k_equal_to_the_number_of_images_and_duplicate_terms_works(app_data, tmp_path, tiny_model_config,
                                                                              tiny_checkpoint):
    ws = create_workspace("params", app_data)
    few_images(ws, tmp_path / "imgs", 4)
    spec = {"wordnet": False, "domain_terms": ["crack", "Crack", "crack ", "stain"], "templates": "photo1"}
    run_id = jobs.start_run(ws, run_params.RunParams(**tiny_params(tiny_model_config, tiny_checkpoint, n_clusters=4,
                                                               vocab_spec=spec)))
    run = ws.run(run_id)
    assert run["status"] == "done", run["error"]
    assert sorted(ws.run_assignments(run_id)["cluster"]) == [0, 1, 2, 3]
    assert jobs.read_summary(ws, run_id)["n_vocabulary"] == 2  # "crack" three ways is one term
    ws.close()


def press(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click()
    at.run()
    assert not at.exception, at.exception
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value.replace("\\", "") for e in at.error]


def test_cluster_page_refuses_a_vocabulary_set_with_every_term_off(app_data, tmp_path):
    ws = create_workspace("page", app_data)
    few_images(ws, tmp_path / "imgs", 4)
    ws.save_vocab_set("all off", {**vocab_spec.default_spec(), "wordnet": False, "domain_terms": ["dent"],
                                  "disabled": ["dent"]})
    at = open_app("pages/cluster.py", ws)
    at.selectbox(key="cluster_vocab_set").set_value("all off").run()
    press(at, "Start run")
    assert any("every term of this vocabulary set is switched off" in e for e in errors(at)), errors(at)
    assert ws.runs().empty
    ws.close()


def test_cluster_page_with_one_image_says_what_is_needed(app_data, tmp_path):
    ws = create_workspace("one", app_data)
    few_images(ws, tmp_path / "imgs", 1)
    at = open_app("pages/cluster.py", ws)
    assert any("needs at least 2 usable images" in w.value for w in at.warning)
    assert not [b for b in at.button if b.label == "Start run"]
    ws.close()


def test_vocabulary_page_refuses_bad_terms_and_keeps_duplicates_once(app_data):
    ws = create_workspace("vocab", app_data)
    at = open_app("pages/vocabulary.py", ws)

    def add(term: str) -> AppTest:
        next(t for t in at.text_input if t.label == "Domain term").input(term)
        return press(at, "Add domain term")

    add(LONG_TERM)
    assert any("500 characters long; terms may have at most 200" in e for e in errors(at)), errors(at)
    add("bell\x07term")
    assert any("control character U+0007" in e for e in errors(at)), errors(at)
    add("solder bridge")
    add("Solder  Bridge")
    assert any("Already there: Solder Bridge" in i.value.replace("\\", "") for i in at.info)
    assert [t["term"] for t in ws.load_vocab_set("default")["domain_terms"]] == ["solder bridge"]
    next(t for t in at.text_area if t.label.startswith("Paste terms")).input(f"dent\n{LONG_TERM}\n")
    press(at, "Add pasted terms")
    assert any("line 2 of the pasted list is 500 characters long" in e for e in errors(at)), errors(at)
    assert [t["term"] for t in ws.load_vocab_set("default")["domain_terms"]] == ["solder bridge"]  # all or nothing
    at.file_uploader(key="vocab_import_0").set_value(("terms.csv", "term\ncaf\xe9\n".encode("latin-1"), "text/csv"))
    at.run()
    press(at, "Import terms")
    assert any("terms.csv: is not UTF-8 text" in e for e in errors(at)), errors(at)
    ws.close()


def test_weights_that_do_not_fit_the_model_are_refused_by_name(tmp_path, tiny_model_config, app_data):
    """A checkpoint of another architecture (its embeddings would have another dimension) or a file that is no
    checkpoint at all: the job fails at once with the file named, nothing is stored."""
    import json

    from tac_core.embedding.models import load_model, save_checkpoint

    other = json.loads(tiny_model_config.read_text())
    other["embed_dim"] = 16
    (tmp_path / "other.json").write_text(json.dumps(other))
    foreign = save_checkpoint(load_model(ModelSpec(str(tmp_path / "other.json"), pretrained="none"), "cpu").model,
                              tmp_path / "other.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"<html>404</html>")
    ws = create_workspace("weights", app_data)
    few_images(ws, tmp_path / "imgs", 4)
    for checkpoint, message in ((foreign, "does not fit the architecture"), (junk, "could not be read")):
        run_id = jobs.start_run(ws, run_params.RunParams(**tiny_params(tiny_model_config, checkpoint)))
        run = ws.run(run_id)
        assert run["status"] == "failed" and str(checkpoint) in run["error"] and message in run["error"], run["error"]
        assert ws.run_assignments(run_id).empty and not list(ws.run_dir(run_id).glob("*.npy"))
    ws.close()
