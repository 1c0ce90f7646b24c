"""``python -m tac_core workspace …``: every step of the app from a shell, so a plant can script nightly runs::

    python -m tac_core workspace create "Line 3"
    python -m tac_core workspace add "Line 3" /data/line3/2024-06-01 extra_parts.zip
    python -m tac_core workspace vocab "Line 3" defects --terms our_terms.csv --categories noun.artifact
    python -m tac_core workspace run "Line 3" --k 8 --vocab-set defects --seed 0
    python -m tac_core workspace export "Line 3" --tree --coco --zip
    python -m tac_core workspace history "Line 3" --run 1 > history.csv
    python -m tac_core workspace approve "Line 3" 0 2 --run 1      # sign clusters off (sign_off_cli)
    python -m tac_core workspace intake "Line 3" --run 1          # a later batch, sorted as reviewed (batch_cli)

A workspace is named by its folder or by its name among the workspaces of ``--data`` (default: where the app
keeps them, ``$TAC_STUDIO_DATA``). Each verb calls what the app's page calls: ``ingest.add_folder`` and
``add_uploads``, ``Workspace.save_vocab_set``, ``jobs.start_run`` with :class:`RunParams` (the job runs in this
process, its stages shown on stderr), :func:`~tac_core.workspace.bundle.write_bundle`. Lists (``list``,
``runs``, ``history``) are CSV on stdout with spreadsheet-safe cells; what a verb made (a path, a run id) is
printed on stdout, everything else on stderr. Exit status: 0 done, 1 a run failed or a bundle does not verify,
2 bad input (one ``error: …`` line), 130 interrupted or cancelled.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
import threading
from pathlib import Path
from typing import Optional

import numpy as np

from ..cluster import BALANCES, MODES
from ..devices import DEVICES
from ..errors import InvalidInputError, ParameterError
from ..inputs import vocab_spec
from ..workspace import ingest
from ..workspace.bundle import BundleOptions, write_bundle
from ..workspace.export import neutralise
from ..workspace.manifest import verify_bundle
from ..workspace.review import ReviewSession
from ..workspace.review_log import events_table
from ..workspace.workspace import Workspace, create_workspace, data_dir, list_workspaces, open_workspace
from . import batch_cli, sign_off_cli
from .params import PROJECTIONS, RunParams
from .terminal import flag_error, progress_printer

#: RunParams fields the ``run`` verb sets from a flag: field → (flag, attribute of the parsed arguments, what)
_RUN_FLAGS = {"n_clusters": ("--k", "k", "the clusters"), "mode": ("--mode", "mode", "the mode"),
              "seed": ("--seed", "seed", "the random seed"), "epochs": ("--epochs", "epochs", "the training epochs"),
              "batch_size": ("--batch-size", "batch_size", "the image batch size"),
              "device": ("--device", "device", "the device"), "suggest_k": ("--suggest-k", "suggest_k", "K suggestion"),
              "balance": ("--balance", "balance", "the cluster sizes")}
RUN_FIELDS = ("id", "status", "created", "finished", "n_images", "n_clusters", "mode", "seed", "vocab_set", "model",
              "error")


def add_commands(commands) -> None:
    """Register ``workspace`` and its verbs on the CLI's sub-command parsers."""
    parser = commands.add_parser("workspace", help="create, fill, run and export workspaces without the app",
                                 description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=type(parser))
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data", type=Path, help=f"folder of workspaces (default {data_dir()})")
    named = argparse.ArgumentParser(add_help=False, parents=[data])
    named.add_argument("workspace", help="workspace name (in --data) or folder")

    verbs.add_parser("list", parents=[data], help="the workspaces, as CSV")
    create = verbs.add_parser("create", parents=[data], help="create an empty workspace; prints its folder")
    create.add_argument("name")
    add = verbs.add_parser("add", parents=[named], help="add images: folders (by path) or files (.zip, images)")
    add.add_argument("sources", nargs="+", type=Path)
    add.add_argument("--no-recursive", action="store_true", help="folders: leave sub-folders out")
    vocab = verbs.add_parser("vocab", parents=[named], help="save a vocabulary set (as the Vocabulary page does)")
    vocab.add_argument("name", help="set name; an existing set is replaced")
    vocab.add_argument("--spec", type=Path, help="the set as JSON (as the app stores it); other flags change it")
    vocab.add_argument("--terms", type=Path, help="your own terms: .txt (one a line) or .csv (term, note)")
    vocab.add_argument("--categories", help="WordNet categories, comma-separated (e.g. noun.artifact)")
    vocab.add_argument("--subtrees", help="only nouns under these synsets, comma-separated (e.g. blemish.n.01)")
    vocab.add_argument("--packs", help="shipped domain packs, comma-separated (e.g. surface_defects)")
    vocab.add_argument("--no-wordnet", action="store_true", help="no WordNet nouns: only packs and your terms")
    vocab.add_argument("--templates", choices=sorted(vocab_spec.TEMPLATE_NOTES), help="prompt template set")
    verbs.add_parser("runs", parents=[named], help="the workspace's runs, newest first, as CSV")
    _add_run_verb(verbs, named)
    export = verbs.add_parser("export", parents=[named], help="write an export bundle; prints its path")
    export.add_argument("--run", type=int, help="run id (default: the newest finished run)")
    export.add_argument("--out", type=Path, help="folder to write into (default: the workspace's exports/)")
    export.add_argument("--verified-only", action="store_true", help="only images verified themselves or "
                                                                     "through their cluster")
    export.add_argument("--clusters", help="only these cluster ids, comma-separated")
    export.add_argument("--approved-only", action="store_true", help="only the images of approved clusters")
    export.add_argument("--tree", action="store_true", help="add the images/<label>/<file> folder tree")
    export.add_argument("--label-studio", action="store_true", help="add Label Studio tasks and config")
    export.add_argument("--coco", action="store_true", help="add a COCO-style classification JSON")
    export.add_argument("--zip", action="store_true", help="write one .zip instead of a folder")
    history = verbs.add_parser("history", parents=[named], help="a run's review events, approvals included, as CSV")
    history.add_argument("--run", type=int, help="run id (default: the newest finished run)")
    history.add_argument("--user", action="append", default=[], help="only events by this user (repeatable)")
    history.add_argument("--cluster", action="append", type=int, default=[], help="only events touching this "
                                                                                   "cluster id (repeatable)")
    history.add_argument("--action", action="append", default=[], help="only events of this kind, e.g. approve "
                                                                        "or rename (repeatable)")
    verify = verbs.add_parser("verify", parents=[data], help="check a bundle's files (and its event log) against "
                                                             "its manifest")
    verify.add_argument("bundle", type=Path, help="bundle folder or .zip")
    verify.add_argument("--workspace", help="the workspace it came from: also re-hash the run's event log")
    batch_cli.add_verbs(verbs, named)
    sign_off_cli.add_verbs(verbs, named)


def _add_run_verb(verbs, named) -> None:
    run = verbs.add_parser("run", parents=[named], help="cluster the workspace's usable images; prints the run id",
                           description="Parameters come from flags, else from --like RUN or --params FILE (flags "
                                       "override them), else the app's defaults.")
    run.add_argument("--like", type=int, metavar="RUN", help="start from an earlier run's parameters")
    run.add_argument("--params", type=Path, help="start from a JSON of run parameters (RunParams.to_dict())")
    run.add_argument("--k", type=int, help="number of clusters (required unless --like/--params give it)")
    run.add_argument("--vocab-set", help="vocabulary set (default: the most recently edited one)")
    run.add_argument("--model", help="open_clip model name, 'local-dir:FOLDER' or a model config .json "
                                     "(default ViT-B-32)")
    run.add_argument("--pretrained", help="open_clip weights tag (default openai)")
    run.add_argument("--checkpoint", type=Path, help="local weights file (overrides --pretrained)")
    run.add_argument("--mode", choices=MODES)
    run.add_argument("--balance", choices=BALANCES, help="cluster sizes: estimated from the data (default) or uniform "
                                                         "(equal, as in the TAC paper)")
    run.add_argument("--seed", type=int)
    run.add_argument("--epochs", type=int, help="trained mode: epochs (default 20)")
    run.add_argument("--batch-size", type=int, help="images embedded at once (default 64)")
    run.add_argument("--device", choices=DEVICES)
    run.add_argument("--map", choices=(*PROJECTIONS, "none"), help="2-D map of the Review page (default umap)")
    run.add_argument("--suggest-k", action=argparse.BooleanOptionalAction, help="suggest K after clustering "
                                                                                 "(default yes)")


def main(args: argparse.Namespace) -> int:
    """Run one verb (errors a user can cause propagate as :class:`~tac_core.errors.TacError`)."""
    if args.verb == "list":
        return _list(args)
    if args.verb == "create":
        print(create_workspace(args.name, args.data).path)
        return 0
    if args.verb == "verify":
        return _verify(args)
    with open_workspace(args.workspace, args.data) as workspace:
        return {"add": _add, "vocab": _vocab, "runs": _runs, "run": _run, "export": _export, "history": _history,
                "intake": batch_cli.run_verb, "metadata": batch_cli.run_verb,
                **dict.fromkeys(sign_off_cli.VERBS, sign_off_cli.run_verb)}[args.verb](workspace, args)


def _list(args) -> int:
    write_csv(["name", "path", "created", "images", "runs", "error"],
              [(i.name, i.path, i.created, i.image_count, i.run_count, i.error) for i in list_workspaces(args.data)])
    return 0


def _add(workspace: Workspace, args) -> int:
    for source in args.sources:
        if source.is_dir():
            report = ingest.add_folder(workspace, source.resolve(), recursive=not args.no_recursive)
        elif source.is_file():
            with io.FileIO(source) as upload:
                upload.name = source.name  # an upload is named as a browser names it: no server folder
                report = ingest.add_uploads(workspace, [upload])
        else:
            raise InvalidInputError(f"{source} is neither a folder nor a file; give folders of images, .zip files "
                                    "or image files.")
        print(f"{source}: {report.summary()}", file=sys.stderr)
    return 0


def _vocab(workspace: Workspace, args) -> int:
    spec = vocab_spec.default_spec()
    if args.spec is not None:
        spec = _read_json(args.spec, "vocabulary set")
    for flag, key in (("categories", "categories"), ("subtrees", "subtrees"), ("packs", "domain_packs")):
        if getattr(args, flag):
            spec[key] = [part.strip() for part in getattr(args, flag).split(",") if part.strip()]
    if args.no_wordnet:
        spec["wordnet"] = False
    if args.templates:
        spec["templates"] = args.templates
    spec = vocab_spec.validate_spec(spec)
    if args.terms is not None:
        terms = vocab_spec.read_terms_file(args.terms.name, _read_bytes(args.terms, "terms file"))
        spec = vocab_spec.add_domain_terms(spec, terms)[0]
    vocab_spec.build_vocabulary(spec)  # an empty set is refused now, not when a run starts
    version = workspace.save_vocab_set(args.name, spec)
    print(f"saved vocabulary set {args.name!r} (version {version}): {vocab_spec.spec_summary(spec)}", file=sys.stderr)
    return 0


def _runs(workspace: Workspace, args) -> int:
    rows = []
    for run in workspace.runs().itertuples(index=False):
        params = run.params
        model = (params.get("model") or {}).get("name")
        rows.append((run.id, run.status, run.created, run.finished or "", run.n_images, _blank(run.n_clusters),
                     params.get("mode"), params.get("seed"), params.get("vocab_set", ""), model, run.error or ""))
    write_csv(RUN_FIELDS, rows)
    return 0


def run_params(workspace: Workspace, args) -> RunParams:
    """The run the ``run`` verb asks for: --like or --params, flags on top, the vocabulary set's spec copied in."""
    stored: dict = {}
    if args.like is not None:
        stored = dict(workspace.run(args.like)["params"])
    elif args.params is not None:
        stored = _read_json(args.params, "run parameters")
    for field, (_, attribute, _) in _RUN_FLAGS.items():
        if getattr(args, attribute) is not None:
            stored[field] = getattr(args, attribute)
    if args.map is not None:
        stored["projection"] = None if args.map == "none" else args.map
    model = dict(stored.get("model") or {"name": "ViT-B-32", "pretrained": "openai", "checkpoint": None})
    for key, value in (("name", args.model), ("pretrained", args.pretrained), ("checkpoint", args.checkpoint)):
        if value is not None:
            model[key] = str(Path(value).resolve()) if key == "checkpoint" or str(value).endswith(".json") else value
    stored["model"] = model
    if args.vocab_set is not None or not stored.get("vocab_spec"):
        name = args.vocab_set or vocab_spec.ensure_default_set(workspace)
        stored.update(vocab_set=name, vocab_spec=vocab_spec.load_spec(workspace, name), templates=None)
    if args.like is None:  # a new description: sizes estimated unless asked (a stored run keeps what it computed)
        stored.setdefault("balance", BALANCES[0])
    if stored.get("n_clusters") is None:
        raise InvalidInputError("give the number of clusters with --k (or --like RUN / --params FILE)")
    try:
        return RunParams.from_dict(stored)
    except ParameterError as exc:
        raise flag_error(exc, {field: (flag, what) for field, (flag, _, what) in _RUN_FLAGS.items()}) from None


def _run(workspace: Workspace, args) -> int:
    from . import jobs

    run_id = jobs.prepare_run(workspace, run_params(workspace, args))
    done = threading.Event()
    watcher = threading.Thread(target=_show_stages, args=(workspace, run_id, done), daemon=True)
    watcher.start()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the job's own lines; stdout carries the run id alone
            jobs.launch_or_fail(workspace, run_id, inline=True)
    finally:
        done.set()
        watcher.join()
    run = workspace.run(run_id)
    print(run_id)
    if run["status"] != "done":
        print(f"run {run_id} {run['status']}: {run['error']}", file=sys.stderr)
        return 130 if run["status"] == "cancelled" else 1
    print(f"run {run_id} done: {run['n_images']} images in {run['n_clusters']} clusters", file=sys.stderr)
    return 0


def _show_stages(workspace: Workspace, run_id: int, done: threading.Event) -> None:
    """Print the job's progress on stderr (each stage, then each tenth of it), looking once a second."""
    from .jobs import read_stages

    progress, shown, finished = progress_printer(), {}, False
    while not finished:
        finished = done.wait(1.0)
        for stage in read_stages(workspace, run_id):
            if shown.get(stage["stage"]) != stage["done"]:
                shown[stage["stage"]] = stage["done"]
                progress(stage["stage"], stage["done"], stage["total"])


def newest_done(workspace: Workspace, run_id: Optional[int]) -> int:
    """``run_id``, or the newest finished run of the workspace when it is None."""
    if run_id is not None:
        return run_id
    runs = workspace.runs()
    done = runs.loc[runs["status"] == "done", "id"]
    if done.empty:
        raise InvalidInputError(f"the workspace {workspace.name!r} has no finished run yet; run one first.")
    return int(done.iloc[0])


def _export(workspace: Workspace, args) -> int:
    clusters = None
    if args.clusters:
        try:
            clusters = tuple(int(part) for part in args.clusters.split(",") if part.strip())
        except ValueError:
            raise InvalidInputError(f"--clusters takes cluster ids separated by commas, not {args.clusters!r}") from None
    options = BundleOptions(verified_only=args.verified_only, clusters=clusters, approved_only=args.approved_only,
                            folder_tree=args.tree, label_studio=args.label_studio, coco=args.coco, as_zip=args.zip)
    session = ReviewSession(workspace, newest_done(workspace, args.run), session_id="cli")
    result = write_bundle(session, options, args.out)
    print(result.path)
    print(f"exported {result.n_rows} rows ({result.n_duplicates} of them duplicates) of run {session.run_id}",
          file=sys.stderr)
    return 0


def _history(workspace: Workspace, args) -> int:
    table = events_table(ReviewSession(workspace, newest_done(workspace, args.run), session_id="cli"), args.user,
                         args.cluster, args.action)
    write_csv(list(table.columns), table.itertuples(index=False, name=None))
    return 0


def _verify(args) -> int:
    workspace = open_workspace(args.workspace, args.data) if args.workspace else None
    try:
        problems = verify_bundle(args.bundle, workspace)
    finally:
        if workspace is not None:
            workspace.close()
    for problem in problems:
        print(f"mismatch: {problem}", file=sys.stderr)
    checked = "its files and the event log" if workspace is not None else "its files"
    print(f"{args.bundle}: {'does not match' if problems else 'matches'} its manifest ({checked})", file=sys.stderr)
    return 1 if problems else 0


def write_csv(header, rows) -> None:
    """Rows on stdout: text cells made formula-safe (:func:`neutralise`), booleans as ``true``/``false``."""
    def cell(value):
        if isinstance(value, (bool, np.bool_)):
            return "true" if value else "false"
        return neutralise(value) if isinstance(value, str) else value

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([cell(value) for value in row] for row in rows)


def _blank(value) -> object:
    return "" if value is None or value != value else int(value)


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"the {what} {path} cannot be read ({exc.strerror or exc}).") from exc


def _read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(_read_bytes(path, what).decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(f"the {what} file {path} is not JSON ({exc}).") from exc
    if not isinstance(value, dict):
        raise InvalidInputError(f"the {what} file {path} must hold a JSON object, not {type(value).__name__}.")
    return value
