"""``python -m tac_core classify``: new embeddings or images sorted into a ``cluster`` output or a workspace run
as reviewed, an unseen class sent to the unsorted bucket, and one-line errors that write nothing."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tac_core.cluster.synthetic import make_clip_like_bed
from tac_core.run.cli import main
from tac_core.workspace.intake import BUCKET_NAME
from tac_core.workspace.review import ReviewSession

from intake_workspace import bed_workspace
from test_cli import run_cli

COLUMNS = ["index", "path", "cluster", "label", "confidence", "novelty", "novel"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A ``cluster`` output of 80 % of the images of classes 0-2, and the new embeddings: the other 20 % and
    every image of class 3."""
    bed = make_clip_like_bed(n_samples=800, n_classes=4, dim=64, noise=1.2, n_distractor_nouns=300, random_state=2)
    folder = tmp_path_factory.mktemp("classify")
    rng = np.random.default_rng(0)
    known = rng.permutation(np.flatnonzero(bed.labels != 3))
    old, new = np.sort(known[:480]), np.concatenate([np.sort(known[480:]), np.flatnonzero(bed.labels == 3)])
    np.save(folder / "X.npy", bed.image_embeddings[old])
    np.save(folder / "NEW.npy", bed.image_embeddings[new])
    np.save(folder / "V.npy", bed.vocab_embeddings)
    (folder / "names.txt").write_text("\n".join(bed.vocab_names) + "\n")
    assert main(["cluster", "--image-embeddings", str(folder / "X.npy"), "--vocab-embeddings", str(folder / "V.npy"),
                 "--vocab", str(folder / "names.txt"), "--k", "3", "--out", str(folder / "out"), "--no-audit"]) == 0
    return folder, bed.labels[old], bed.labels[new]


def test_classify_a_cluster_output_from_new_embeddings(reference, tmp_path):
    folder, old_truth, new_truth = reference
    assert main(["classify", "--reference", str(folder / "out"), "--image-embeddings", str(folder / "NEW.npy"),
                 "--out", str(tmp_path / "sorted")]) == 0
    predictions = pd.read_csv(tmp_path / "sorted" / "predictions.csv", keep_default_na=False)
    assert list(predictions.columns) == COLUMNS and predictions["index"].tolist() == list(range(len(new_truth)))
    assert (predictions["path"] == "").all()
    clusters = pd.read_csv(folder / "out" / "assignments.csv")["cluster"].to_numpy()
    cluster_of = {c: int(np.bincount(clusters[old_truth == c]).argmax()) for c in range(3)}
    known = new_truth != 3
    expected = np.array([cluster_of.get(int(c), -2) for c in new_truth])
    assert (predictions["cluster"].to_numpy()[known] == expected[known]).mean() >= 0.85
    novel = predictions["novel"].to_numpy()
    assert novel[~known].mean() >= 0.4 and novel[known].mean() <= 0.1  # most of the unseen class waits apart
    assert (predictions.loc[novel, "cluster"] == -1).all() and (predictions.loc[novel, "label"] == BUCKET_NAME).all()
    sorted_rows = predictions[~novel]
    assert (sorted_rows["label"] == "cluster " + sorted_rows["cluster"].astype(str)).all()
    assert predictions["confidence"].between(0, 1).all()
    assert predictions.loc[~known, "novelty"].mean() > predictions.loc[known, "novelty"].mean()


def test_classify_refuses_bad_input_in_one_line_and_writes_nothing(reference, tmp_path):
    folder, _, _ = reference
    np.save(tmp_path / "wide.npy", np.ones((3, 65), np.float32))
    out = tmp_path / "sorted"
    cases = [(["--reference", folder, "--image-embeddings", tmp_path / "wide.npy"], "64-dimensional"),
             (["--reference", tmp_path, "--image-embeddings", folder / "NEW.npy"], "classifier.npz"),
             (["--reference", folder / "out"], "--images DIR or --image-embeddings"),
             (["--reference", folder / "out", "--workspace", "x", "--image-embeddings", folder / "NEW.npy"],
              "--reference DIR or --workspace"),
             (["--reference", folder / "out", "--images", folder], "clustered from embeddings")]
    cases[0][0][1] = folder / "out"
    for args, message in cases:
        result = run_cli("classify", *args, "--out", out)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not out.exists()


def test_classify_by_a_workspace_run_as_reviewed(tmp_path, monkeypatch):
    bed = bed_workspace(tmp_path / "data")
    try:
        session = ReviewSession(bed.workspace, bed.run_id)
        target = bed.cluster_of_class[0]
        session.rename(target, "hairline crack")
        gone = bed.cluster_of_class[1]
        session.merge([gone], bed.cluster_of_class[2])
        known = bed.batch_truth != bed.held_out
        np.save(tmp_path / "new.npy", bed.batch_x)
        out = tmp_path / "sorted"
        assert main(["classify", "--workspace", str(bed.workspace.path), "--image-embeddings",
                     str(tmp_path / "new.npy"), "--out", str(out)]) == 0
        predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
        assert gone not in set(predictions["cluster"])  # merged away: nothing is sorted into it
        first = known & (bed.batch_truth == 0)
        assert (predictions.loc[first, "label"] == "hairline crack").mean() >= 0.85
        novel = predictions["novel"].to_numpy()  # the unseen class goes to the bucket far more often
        assert novel[~known].mean() > 4 * novel[known].mean()
        assert len(session.history()) == 2 and len(ReviewSession(bed.workspace, bed.run_id).history()) == 2
    finally:
        bed.workspace.close()


@pytest.mark.slow
def test_classify_images_by_a_cluster_output_of_images(elpv_images, tiny_model_config, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    result = run_cli("cluster", "--images", elpv_images, "--model", tiny_model_config, "--checkpoint", tiny_checkpoint,
                     "--vocab-categories", "noun.shape", "--templates", "photo1", "--k", 3, "--cache",
                     tmp_path / "cache", "--out", out, "--no-audit")
    assert result.returncode == 0, result.stderr
    new = tmp_path / "new"
    new.mkdir()
    for path in sorted(elpv_images.glob("*.png"))[:4]:
        (new / path.name).write_bytes(path.read_bytes())
    (new / "notes.txt").write_text("not an image")
    result = run_cli("classify", "--reference", out, "--images", new, "--cache", tmp_path / "cache", "--out",
                     tmp_path / "sorted")
    assert result.returncode == 0, result.stderr
    predictions = pd.read_csv(tmp_path / "sorted" / "predictions.csv", keep_default_na=False)
    assignments = pd.read_csv(out / "assignments.csv")
    assert [p.rsplit("/", 1)[-1] for p in predictions["path"]] == sorted(p.name for p in new.glob("*.png"))
    same = assignments.set_index(assignments["path"].str.rsplit("/", n=1).str[-1])["cluster"]
    sorted_ = predictions[~predictions["novel"]]  # an image the run holds goes back to its own cluster
    assert (sorted_["cluster"].to_numpy() == same.loc[[p.rsplit("/", 1)[-1] for p in sorted_["path"]]].to_numpy()).all()
    assert "notes.txt" in (tmp_path / "sorted" / "skipped.csv").read_text()
