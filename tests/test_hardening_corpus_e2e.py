"""Hardening, end to end: the bad-input corpus (tests/bad_inputs.py, plus the extra cases below) goes through
ingest into a workspace, a real clustering job with the tiny model, the review export and the CLI. Every file
gets the behaviour decided for it (docs/HARDENING.md) and the counts agree at every step: scan = workspace =
run = export = CLI outputs.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bad_inputs import (Case, encode, make_bad_input_corpus, make_empty_folder, make_folder_without_images,
                        make_hostile_zip, pattern)
from tac_core.workspace import ingest
from tac_core.run import jobs
from tac_core.run import params as run_params
from tac_core.run import job
from tac_core.inputs import vocab_spec
from tac_core.run.cli import main as cli_main
from tac_core.errors import EmptyInputError
from tac_core.workspace.export import export_labels, neutralise
from tac_core.inputs.imageset import scan_folder
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.workspace import create_workspace

ROOT = Path(__file__).resolve().parent.parent
FORMULA_NAMES = ("=1+2.png", "+SUM(A1).png", "-2.png", "@cmd.png", "\tstarts_with_tab.png")
HOSTILE_NAMES = ("<img src=x onerror=alert(1)>.png", "**bold**.png", "[link](javascript:alert(1)).png",
                 "line\nbreak.png")
NOT_UTF8_NAME = b"latin1_caf\xe9.png"


def make_extra_cases(root: Path) -> list[Case]:
    """Cases beyond the shared corpus: line-scan strips, names a spreadsheet or a browser would interpret, a
    name that is not UTF-8, and a copy in a sub-folder."""
    cases = []

    def put(rel: str, data: bytes, name: str, status: str = "ok", reason=None) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        cases.append(Case(name, rel, status, reason))

    put("line_scan_20000x1.png", encode(pattern((20000, 1), 200), "PNG"), "line-scan strip 20000x1")
    put("tall_1x20000.png", encode(pattern((1, 20000), 201), "PNG"), "tall strip 1x20000")
    for offset, name in enumerate(FORMULA_NAMES + HOSTILE_NAMES):
        put(name, encode(pattern((24, 18), 210 + offset), "PNG"), f"file named {name!r}")
    put("zz_copies/one_pixel.png", (root / "one_pixel.png").read_bytes(), "same bytes in a sub-folder",
        "duplicate", "same content as one_pixel.png")
    (root / os.fsdecode(NOT_UTF8_NAME)).write_bytes(encode(pattern((24, 18), 230), "PNG"))
    cases.append(Case("name that is not UTF-8 (Latin-1 share)", os.fsdecode(NOT_UTF8_NAME), "skipped",
                      "not valid UTF-8"))
    return cases


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening") / "share"
    cases = make_bad_input_corpus(root)
    cases += make_extra_cases(root)
    yield root, cases
    for path in (root / "unreadable.png", root / "locked_dir"):  # let pytest clean up
        if path.exists():
            path.chmod(0o755)


def expected_counts(cases) -> dict[str, int]:
    counts = {status: sum(c.expected_status == status for c in cases) for status in ("ok", "duplicate", "skipped")}
    counts["total"] = len(cases)
    return counts


def stored(text: str) -> str:
    """How the workspace stores a name (undecodable bytes as "?")."""
    return text.encode("utf-8", "replace").decode("utf-8")


def test_the_corpus_covers_at_least_30_kinds(corpus):
    _, cases = corpus
    assert len(cases) >= 60 and len({c.name for c in cases}) == len(cases)
    counts = expected_counts(cases)
    assert counts["ok"] >= 25 and counts["skipped"] >= 20 and counts["duplicate"] >= 2


def test_scan_gives_every_case_its_status_and_reason(corpus):
    root, cases = corpus
    image_set = scan_folder(root)
    records = {r.rel_path: r for r in image_set.records}
    assert set(records) == {c.rel_path for c in cases}
    for case in cases:
        record = records[case.rel_path]
        assert record.status == case.expected_status, (case.name, record.reason)
        if case.expected_reason:
            assert case.expected_reason in record.reason, (case.name, record.reason)
    counts = expected_counts(cases)
    assert image_set.summary() == {"files": counts["total"], "ok": counts["ok"], "skipped": counts["skipped"],
                                   "duplicates": counts["duplicate"]}


@pytest.fixture(scope="module")
def clustered(corpus, tmp_path_factory, tiny_model_config, tiny_checkpoint):
    """The corpus added to a workspace by path, clustered by a real job (in this process), then exported."""
    root, cases = corpus
    data = tmp_path_factory.mktemp("hardening-ws")
    ws = create_workspace("corpus", data)
    report = ingest.add_folder(ws, root)
    spec = {**vocab_spec.default_spec(), "categories": ["noun.shape"], "templates": "photo1",
            "domain_terms": [{"term": "=crack", "note": ""}, {"term": "hairline crack", "note": ""}]}
    params = run_params.RunParams(model={"name": str(tiny_model_config), "checkpoint": str(tiny_checkpoint)},
                              vocab_set="corpus", vocab_spec=spec, n_clusters=4, projection="pca", seed=0,
                              batch_size=16, suggest_k=False)
    run_id = ws.create_run(params.to_dict(), ws.images("ok")["id"].to_numpy())
    status = job.run_job(ws.path, run_id)
    yield ws, report, run_id, status
    ws.close()


def test_ingest_stores_every_case_and_the_counts_match(corpus, clustered):
    _, cases = corpus
    ws, report, _, _ = clustered
    counts = expected_counts(cases)
    assert (report.files, report.added, report.duplicates, report.skipped) == \
        (counts["total"], counts["ok"], counts["duplicate"], counts["skipped"])
    assert ws.image_counts() == counts
    assert report.thumbnails_made == counts["ok"]
    frame = ws.images().set_index("rel_path")
    for case in cases:
        row = frame.loc[stored(case.rel_path)]
        assert row["status"] == case.expected_status, (case.name, row["reason"])
        if case.expected_reason:
            assert case.expected_reason in row["reason"], (case.name, row["reason"])
    assert ws.connection().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_real_job_clusters_every_usable_image(corpus, clustered):
    _, cases = corpus
    ws, _, run_id, status = clustered
    run = ws.run(run_id)
    assert status == "done", run["error"]
    ok = expected_counts(cases)["ok"]
    summary = jobs.read_summary(ws, run_id)
    assert summary["failed_images"] == []  # everything the scan accepted (strips, CMYK, 16-bit …) embeds
    assert run["n_images"] == summary["n_images"] == ok
    assignments = ws.run_assignments(run_id)
    assert len(assignments) == ok and set(assignments["cluster"]) <= {0, 1, 2, 3}
    expected_paths = {stored(c.rel_path) for c in cases if c.expected_status == "ok"}
    assert set(assignments["rel_path"]) == expected_paths
    for name in ("image_embeddings", "counterparts", "confidence", "projection"):
        array = ws.load_run_array(run_id, name)
        assert len(array) == ok and np.isfinite(array).all(), name


def test_the_export_has_one_safe_relative_row_per_clustered_image(corpus, clustered):
    root, cases = corpus
    ws, _, run_id, _ = clustered
    result = export_labels(ReviewSession(ws, run_id), ws, run_id)
    ok = [c for c in cases if c.expected_status == "ok"]
    assert result.n_rows == result.manifest["counts"]["rows"] == len(ok)
    rows = list(csv.DictReader(io.StringIO(result.csv_bytes.decode("utf-8-sig"), newline="")))
    assert len(rows) == len(ok)
    paths = [row["relative_path"] for row in rows]
    assert sorted(paths) == sorted(neutralise(c.rel_path) for c in ok)  # relative to the source, as scanned
    assert not any(p.startswith(("/", "\\")) or str(root) in p or str(ws.path) in p for p in paths)
    for name in FORMULA_NAMES:
        assert "'" + name in paths  # a spreadsheet shows it as text, never runs it
    for name in HOSTILE_NAMES:
        assert name in paths  # verbatim: a CSV is data, not markup
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row.values())


@pytest.mark.slow
def test_the_cli_on_the_corpus_agrees_with_the_workspace(corpus, tmp_path, tiny_model_config, tiny_checkpoint):
    root, cases = corpus
    terms = tmp_path / "terms.csv"
    terms.write_text("term,note\ncrack,line\n=SUM(A1),a hostile term\nstain,\n", encoding="utf-8")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "tac_core", "cluster", "--images", str(root), "--model",
                           str(tiny_model_config), "--checkpoint", str(tiny_checkpoint), "--vocab", str(terms),
                           "--k", "4", "--cache", str(tmp_path / "cache"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    counts = expected_counts(cases)
    assignments = pd.read_csv(out / "assignments.csv", keep_default_na=False)
    skipped = pd.read_csv(out / "skipped.csv", keep_default_na=False)
    run = json.loads((out / "run.json").read_text())
    assert len(assignments) == run["n_images"] == counts["ok"]
    assert len(skipped) == run["n_skipped"] == counts["skipped"] + counts["duplicate"]
    assert set(assignments["path"]) == {stored(str(root / c.rel_path)) for c in cases if c.expected_status == "ok"}
    assert stored(str(root / os.fsdecode(NOT_UTF8_NAME))) in set(skipped["path"])
    anchors = pd.read_csv(out / "anchors.csv", keep_default_na=False)
    assert not anchors["term"].str.startswith(("=", "+", "-", "@")).any()


@pytest.mark.parametrize("kind", ["empty folder", "folder of 0 valid images", "one image"])
def test_folders_with_nothing_to_cluster_are_refused_with_a_reason(kind, tmp_path, capsys, tiny_model_config,
                                                                   tiny_checkpoint):
    ws = create_workspace("nothing", tmp_path / "data")
    if kind == "empty folder":
        folder, message = make_empty_folder(tmp_path), "holds no files"
        with pytest.raises(EmptyInputError, match=message):
            ingest.add_folder(ws, folder)
        assert ws.sources().empty
    elif kind == "folder of 0 valid images":
        folder, files = make_folder_without_images(tmp_path)
        message = f"0 of {files} files could be read"
        report = ingest.add_folder(ws, folder)
        assert (report.added, report.skipped) == (0, files)
    else:
        folder = tmp_path / "one"
        folder.mkdir()
        (folder / "only.png").write_bytes(encode(pattern((20, 20), 240), "PNG"))
        (folder / "only copy.png").write_bytes(encode(pattern((20, 20), 240), "PNG"))
        message = "needs at least 2 images"
        assert ingest.add_folder(ws, folder).added == 1
    params = run_params.RunParams(model={"name": str(tiny_model_config), "checkpoint": str(tiny_checkpoint)},
                              vocab_set="d", vocab_spec={"wordnet": False, "domain_terms": ["crack"]}, n_clusters=2)
    with pytest.raises(Exception, match="no usable images|more than the 1 usable"):
        jobs.start_run(ws, params)
    assert ws.runs().empty
    terms = tmp_path / "terms.txt"
    terms.write_text("crack\n")
    code = cli_main(["cluster", "--images", str(folder), "--model", str(tiny_model_config), "--checkpoint",
                     str(tiny_checkpoint), "--vocab", str(terms), "--k", "2", "--cache", str(tmp_path / "cache"),
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()  # refused before any embedding
    ws.close()


def test_a_hostile_zip_upload_counts_every_member(tmp_path):
    zip_path = tmp_path / "hostile.zip"
    cases = make_hostile_zip(zip_path)
    ws = create_workspace("zip", tmp_path / "data")
    report = ingest.add_uploads(ws, [("hostile.zip", zip_path.read_bytes())])
    extracted = [c for c in cases if c.expected_status == "extracted"]
    assert report.files == len(cases)  # every member is listed: extracted and scanned, or refused with a reason
    assert (report.added, report.duplicates) == (1, len(extracted) - 1)  # one picture under three names
    assert report.skipped == len(cases) - len(extracted)
    assert ws.image_counts()["total"] == report.files
    ws.close()


def test_extreme_aspect_strips_reach_the_model_cropped(tmp_path, tiny_model):
    """A 200,000×1 line-scan strip is 0.2 megapixels, but CLIP's resize of the short side would make it
    gigabytes: the encoder hands the model only its central 4:1 part; ordinary photos are untouched."""
    import dataclasses

    from PIL import Image

    from tac_core.inputs.image_decode import MAX_ASPECT_RATIO, crop_extreme_aspect
    from tac_core.embedding.image_encoding import encode_images

    sizes = []

    def recording(image):
        sizes.append(image.size)
        return tiny_model.preprocess(image)

    model = dataclasses.replace(tiny_model, preprocess=recording)
    paths = []
    for name, size in (("strip.png", (200_000, 1)), ("tall.png", (1, 50_000)), ("photo.png", (400, 100)),
                       ("wide_photo.png", (160, 90))):
        paths.append(tmp_path / name)
        picture = pattern(size, len(paths)) if max(size) < 1000 else Image.new("RGB", size, (len(paths), 9, 9))
        picture.save(paths[-1])
    result = encode_images(model, paths, num_workers=0)
    assert result.failed == {} and np.isfinite(result.embeddings).all()
    assert sorted(sizes) == sorted([(4, 1), (1, 4), (400, 100), (160, 90)])
    image = pattern((40, 4), 7)
    assert crop_extreme_aspect(image).size == (16, 4) and MAX_ASPECT_RATIO == 4
    np.testing.assert_array_equal(np.asarray(crop_extreme_aspect(image)), np.asarray(image)[:, 12:28])


def scan_as_unprivileged(folder: Path) -> dict[str, tuple[str, str]]:
    """rel_path → (status, reason) of a scan by a user that chmod 000 does stop: this process, or, when it runs
    as root (CI containers), a forked child that first drops to the "nobody" user."""
    def scan() -> dict[str, tuple[str, str]]:
        return {r.rel_path: (r.status, r.reason) for r in scan_folder(folder).records}

    if os.geteuid() != 0:
        return scan()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            data = json.dumps(scan()).encode()
            os.write(write_end, data)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return {key: tuple(value) for key, value in json.loads(data).items()}


def test_unreadable_file_and_folder_are_skipped_with_permission_denied():
    folder = Path(tempfile.mkdtemp(prefix="tac-permissions-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        (folder / "readable.png").write_bytes(encode(pattern((20, 20), 250), "PNG"))
        (folder / "unreadable.png").write_bytes(encode(pattern((20, 20), 251), "PNG"))
        (folder / "unreadable.png").chmod(0)
        (folder / "locked").mkdir()
        (folder / "locked" / "inside.png").write_bytes(encode(pattern((20, 20), 252), "PNG"))
        (folder / "locked").chmod(0)
        records = scan_as_unprivileged(folder)
        assert records == {"readable.png": ("ok", ""), "unreadable.png": ("skipped", "permission denied"),
                           "locked": ("skipped", "permission denied")}
    finally:
        (folder / "locked").chmod(0o755)
        shutil.rmtree(folder)
