"""``python -m tac_core classify``: sort new images (or their embeddings) into a finished clustering, for
automation (a nightly batch sorted by the taxonomy the engineers reviewed)::

    python -m tac_core classify --reference OUT --image-embeddings new.npy --out sorted/
    python -m tac_core classify --reference OUT --images /data/line3/2024-06-02 --out sorted/
    python -m tac_core classify --workspace "Line 3" --run 4 --images /data/line3/2024-06-02 --out sorted/

The clustering is either a ``python -m tac_core cluster`` output folder (its ``classifier.npz``; clusters are
named ``cluster <id>``) or a workspace run *as reviewed* (merges, splits, moves, names, exclusions; verified
members make the prototypes where a cluster has them: :func:`tac_core.run.intake.classify_embeddings`).
Nothing is recorded in the workspace (to add a batch to a review, use ``workspace intake``).
``--images`` embeds with the clustering's model through the cache; row i of ``--image-embeddings`` is new
image i, made with that same model.

Writes ``OUT/predictions.csv``: ``index`` (row of the embeddings, or of the images in path order), ``path``
(images form; empty otherwise), ``cluster`` (−1 for an image in the unsorted bucket), ``label``, ``confidence``,
``novelty`` and ``novel`` (``true``: it fits no cluster well, :mod:`tac_core.cluster.prototypes`); with
``--images`` also ``skipped.csv`` (path, reason).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from .. import atomic
from ..devices import DEVICES, resolve_device
from ..errors import InvalidInputError
from ..inputs.imageset import storable_text
from ..workspace.export import neutralise
from .results import CLASSIFIER_FILE, csv_text
from .terminal import load_npy, progress_printer

if TYPE_CHECKING:  # torch: imported once a classification runs, so the CLI tells bad flags at once
    from ..cluster.prototypes import Assignment

PREDICTIONS_FILE = "predictions.csv"
COLUMNS = ("index", "path", "cluster", "label", "confidence", "novelty", "novel")


def add_parser(commands, default_cache: Path) -> None:
    """Register ``classify`` on the CLI's sub-command parsers."""
    parser = commands.add_parser(
        "classify", help="sort new images or embeddings into a finished clustering (writes predictions.csv)",
        description="One of --reference DIR or --workspace WS, and one of --images DIR or --image-embeddings NEW.npy.")
    source = parser.add_argument_group("the clustering")
    source.add_argument("--reference", type=Path, help="output folder of `python -m tac_core cluster`")
    source.add_argument("--workspace", help="a workspace (name or folder): a run as reviewed")
    source.add_argument("--run", type=int, help="with --workspace: the run (default: the newest finished one)")
    source.add_argument("--data", type=Path, help="with --workspace: the folder of workspaces")
    new = parser.add_argument_group("the new images")
    new.add_argument("--images", type=Path, help="folder of images (searched recursively)")
    new.add_argument("--image-embeddings", type=Path, help="M×d .npy, made with the clustering's model")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--cache", type=Path, default=default_cache,
                        help=f"embedding cache for --reference with --images (default {default_cache})")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def run(args: argparse.Namespace) -> str:
    """Everything ``classify`` does; returns the line the CLI prints at the end."""
    if (args.reference is None) == (args.workspace is None):
        raise InvalidInputError("give either --reference DIR or --workspace WS (exactly one of them)")
    if (args.images is None) == (args.image_embeddings is None):
        raise InvalidInputError("give either --images DIR or --image-embeddings NEW.npy (exactly one of them)")
    if args.reference is not None and (args.run is not None or args.data is not None):
        raise InvalidInputError("--run and --data only apply with --workspace")
    device = str(resolve_device(args.device))
    if args.reference is not None:
        result, paths, skipped, names = _from_reference(args, device)
    else:
        result, paths, skipped, names = _from_workspace(args, device)
    atomic.write_text(args.out / PREDICTIONS_FILE, predictions_csv(result, names, paths))
    if args.images is not None:
        rows = ((neutralise(storable_text(path)), reason) for path, reason in skipped)
        atomic.write_text(args.out / "skipped.csv", csv_text(["path", "reason"], rows))
    return (f"wrote {args.out / PREDICTIONS_FILE} ({len(result.cluster)} images, {int(result.novel.sum())} unsorted: "
            "possibly new)")


def predictions_csv(result: Assignment, names: dict[int, str], paths: Optional[list[str]] = None) -> str:
    """``predictions.csv``'s text (module docstring); text cells made spreadsheet-safe."""
    from ..workspace.intake import BUCKET_NAME  # torch: see TYPE_CHECKING above
    cluster = np.where(result.novel, -1, result.cluster)
    labels = (BUCKET_NAME if c < 0 else names.get(int(c), f"cluster {c}") for c in cluster.tolist())
    rows = zip(range(len(cluster)), (neutralise(storable_text(p)) for p in paths) if paths else [""] * len(cluster),
               cluster.tolist(), map(neutralise, labels), (f"{c:.6f}" for c in result.confidence),
               (f"{v:.3f}" for v in result.novelty), ("true" if v else "false" for v in result.novel))
    return csv_text(list(COLUMNS), rows)


def _from_reference(args, device: str):
    folder = args.reference
    if not (folder / CLASSIFIER_FILE).is_file():
        raise InvalidInputError(f"{folder} holds no {CLASSIFIER_FILE}: give the output folder of `python -m tac_core "
                                "cluster` (outputs of older versions: cluster again)")
    from ..cluster.prototypes import ClusterPrototypes
    prototypes = ClusterPrototypes.from_file(folder / CLASSIFIER_FILE)
    names = {int(c): f"cluster {c}" for c in prototypes.clusters}
    if args.image_embeddings is not None:
        return prototypes.assign(load_npy(args.image_embeddings, "image embeddings"), device), None, [], names
    model = _reference_model(folder)
    x, paths, skipped = _embed_folder(args.images, model, args.cache, device)
    return prototypes.assign(x, device), paths, skipped, names


def _reference_model(folder: Path):
    from .params import model_from_dict

    try:
        params = json.loads((folder / "run.json").read_text(encoding="utf-8"))["params"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{folder / 'run.json'} cannot be read ({exc}); cluster again") from exc
    if not params.get("model"):
        raise InvalidInputError(f"{folder} was clustered from embeddings, so it names no model to embed images with; "
                                "give --image-embeddings made with the model you used")
    return model_from_dict(params["model"])


def _embed_folder(folder: Path, model, cache, device: str):
    from ..embedding.embed import embed_images
    from ..inputs.imageset import scan_folder

    progress = progress_printer()
    image_set = scan_folder(folder, progress=progress)
    embedded = embed_images(model, image_set.paths, image_set.keys, cache, device=device, progress=progress)
    paths = [p for p, ok in zip(image_set.paths, embedded.ok) if ok]
    skipped = [(r.path, r.reason) for r in image_set.records if r.status != "ok"]
    skipped += [(image_set.paths[i], reason) for i, reason in embedded.failed.items()]
    if not paths:
        why = skipped[0][1] if skipped else "it holds no image files"
        raise InvalidInputError(f"no image of {folder} could be used ({why}); give a folder of images")
    return embedded.embeddings[embedded.ok], paths, skipped


def _from_workspace(args, device: str):
    from ..workspace.review import ReviewSession
    from ..workspace.workspace import open_workspace
    from .intake import classify_embeddings
    from .params import model_from_dict
    from .workspace_cli import newest_done

    with open_workspace(args.workspace, args.data) as workspace:
        session = ReviewSession(workspace, newest_done(workspace, args.run), session_id="cli")
        names = dict(session.state.names)
        if args.image_embeddings is not None:
            x, paths, skipped = load_npy(args.image_embeddings, "image embeddings"), None, []
        else:
            model = model_from_dict(workspace.run(session.run_id)["params"].get("model") or {})
            x, paths, skipped = _embed_folder(args.images, model, workspace.cache_dir, device)
        return classify_embeddings(session, x, device), paths, skipped, names
