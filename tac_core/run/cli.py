"""``python -m tac_core cluster``: TAC from a folder of images, or from embeddings a user already has.

Every user error ends as one line ``error: …`` on stderr and exit status 2; never a traceback (set
``TAC_DEBUG=1`` to see one for an unexpected failure).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from ..cluster import BALANCES, MODES
from ..devices import DEVICES
from ..embedding.cache import default_cache_root
from ..errors import InvalidInputError, ParameterError, TacError
from ..progress import Cancelled
from . import classify_cli, embed_cli, workspace_cli
from .params import RunParams
from .terminal import flag_error, load_npy, progress_printer
from .results import ClusterRun, write_cluster_outputs

#: RunParams fields with a flag of their own: how the CLI names them in a message.
_FLAGS = {"n_clusters": ("--k", "the clusters"), "seed": ("--seed", "the random seed"),
          "epochs": ("--epochs", "the training epochs"), "templates": ("--templates", "the prompt templates")}


class _Parser(argparse.ArgumentParser):
    """argparse, but bad arguments give one line and exit 2 instead of a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InvalidInputError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m tac_core", description="TAC Studio's engine: Text-Aided Clustering.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    cluster = commands.add_parser(
        "cluster", help="cluster images (or image embeddings) with TAC",
        description="Either --images DIR, or --image-embeddings X.npy --vocab-embeddings V.npy --vocab names.txt.")
    source = cluster.add_argument_group("images and model")
    source.add_argument("--images", type=Path, help="folder of images (searched recursively)")
    source.add_argument("--model", default="ViT-B-32",
                        help="open_clip model name, 'local-dir:FOLDER', or a model config .json (default ViT-B-32)")
    source.add_argument("--pretrained", default="openai",
                        help="open_clip weights tag (default openai); 'none' = random weights, smoke tests only")
    source.add_argument("--checkpoint", type=Path, help="local weights file (overrides --pretrained)")
    source.add_argument("--device", default="auto", choices=DEVICES)
    cache = default_cache_root()
    source.add_argument("--cache", type=Path, default=cache,
                        help=f"embedding cache (default {cache}: $TAC_STUDIO_CACHE, else ~/.cache/tac-studio)")
    source.add_argument("--templates", default="tac7", help="prompt template set: tac7 (paper), tac3, photo1")
    vocab = cluster.add_argument_group("vocabulary")
    vocab.add_argument("--vocab", type=Path,
                       help="with --images: use ONLY these terms (.txt or .csv); with embeddings: names of V's rows")
    vocab.add_argument("--vocab-extra", type=Path, help="domain terms (.txt or .csv) added to the WordNet nouns")
    vocab.add_argument("--vocab-categories", help="keep only these WordNet categories, comma-separated "
                                                  "(e.g. noun.artifact,noun.state)")
    vocab.add_argument("--vocab-subtree", help="keep only nouns under these synsets, comma-separated (e.g. blemish.n.01)")
    vocab.add_argument("--no-domain-in-text-space", action="store_true",
                       help="let the noun filter decide about domain terms too")
    emb = cluster.add_argument_group("precomputed embeddings")
    emb.add_argument("--image-embeddings", type=Path, help="N×d .npy of image embeddings")
    emb.add_argument("--vocab-embeddings", type=Path, help="V×d .npy of vocabulary embeddings (rows match --vocab)")
    tac = cluster.add_argument_group("clustering")
    tac.add_argument("--k", type=int, required=True, help="number of clusters")
    tac.add_argument("--mode", choices=MODES, default="free")
    tac.add_argument("--balance", choices=BALANCES, default=BALANCES[0],
                     help="cluster sizes: estimated from the data (default; keeps a dominant class whole and rare "
                          "defects apart) or uniform (equal sizes, as in the TAC paper)")
    tac.add_argument("--seed", type=int, default=0)
    tac.add_argument("--epochs", type=int, default=20, help="trained mode: epochs (default 20)")
    cluster.add_argument("--out", type=Path, required=True, help="output folder")
    cluster.add_argument("--no-audit", action="store_true", help="skip audit.csv (the Audit page's ranking of "
                                                                 "likely misclustered images; O(n²), ~5 s at 10k)")
    job = commands.add_parser("run-job", help="compute a run of a TAC Studio workspace (started by the app)",
                              description="Compute the pending run RUN of the workspace folder PATH; see "
                                          "tac_core/run/jobs.py for the protocol.")
    job.add_argument("--workspace", type=Path, required=True, help="workspace folder")
    job.add_argument("--run", type=int, required=True, help="run id")
    embed_cli.add_parser(commands, default_cache_root())
    classify_cli.add_parser(commands, default_cache_root())
    workspace_cli.add_commands(commands)
    return parser


def _params(args: argparse.Namespace) -> RunParams:
    """The run's parameters; a bad value is reported under its flag. The CLI computes no map and no K
    suggestion; with embeddings there is no model."""
    model = None  # as a dict: RunParams checks the numbers first, so a bad --k is told before open_clip loads
    if args.images is not None:
        model = {"name": args.model, "pretrained": args.pretrained,
                 "checkpoint": None if args.checkpoint is None else str(args.checkpoint)}
    try:
        return RunParams(n_clusters=args.k, model=model, mode=args.mode, seed=args.seed, device=args.device,
                         epochs=args.epochs, projection=None, suggest_k=False,
                         include_domain_terms=not args.no_domain_in_text_space, templates=args.templates,
                         balance=args.balance)
    except ParameterError as exc:
        raise flag_error(exc, _FLAGS) from None


def _check_form(args: argparse.Namespace) -> None:
    if (args.images is None) == (args.image_embeddings is None):
        raise InvalidInputError("give either --images DIR or --image-embeddings X.npy (exactly one of them)")
    if args.image_embeddings is not None:
        missing = [flag for flag, value in (("--vocab-embeddings", args.vocab_embeddings), ("--vocab", args.vocab))
                   if value is None]
        if missing:
            raise InvalidInputError(f"--image-embeddings also needs {' and '.join(missing)}")
        extra = [flag for flag, value in (("--vocab-extra", args.vocab_extra),
                                          ("--vocab-categories", args.vocab_categories),
                                          ("--vocab-subtree", args.vocab_subtree)) if value]
        if extra:
            raise InvalidInputError(f"{', '.join(extra)} only apply with --images (embeddings are already made)")
    elif args.vocab_embeddings is not None:
        raise InvalidInputError("--vocab-embeddings only applies with --image-embeddings")
    if args.vocab is not None and args.images is not None and (args.vocab_extra or args.vocab_categories
                                                               or args.vocab_subtree):
        raise InvalidInputError("--vocab replaces the WordNet nouns; combine terms in one file instead of "
                                "adding --vocab-extra/--vocab-categories/--vocab-subtree")


def _read_names(path: Path) -> list[str]:
    """One name per line, in row order (blank lines at the end are ignored).

    Each name follows the rules of a vocabulary term (not empty, no control character, at most 200
    characters) and names one row only: a repeated name would make anchors ambiguous.
    """
    from ..inputs.vocabulary import validated_term, normalize_term

    try:
        lines = path.read_text(encoding="utf-8-sig").rstrip("\r\n").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"names file {path} could not be read as UTF-8 text ({exc})") from exc
    names = [line.rstrip("\r").strip() for line in lines]
    first_line: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        validated_term(name, f"line {number} of {path}")
        first = first_line.setdefault(normalize_term(name), number)
        if first != number:
            raise InvalidInputError(f"line {number} of {path} repeats the name {name!r} of line {first}; give each "
                                    "row of the vocabulary embeddings its own name")
    return names


def _comma_list(text: Optional[str]) -> Optional[list[str]]:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def run_cluster(args: argparse.Namespace) -> ClusterRun:
    """Everything ``cluster`` does before writing: returns what :func:`write_cluster_outputs` writes."""
    params = _params(args)
    _check_form(args)
    from . import pipeline  # open_clip loads only once the arguments are known to be usable
    progress = progress_printer()
    if args.image_embeddings is not None:
        x = load_npy(args.image_embeddings, "image embeddings")
        v = load_npy(args.vocab_embeddings, "vocabulary embeddings")
        names = _read_names(args.vocab)
        if len(names) != len(v):
            raise InvalidInputError(f"{args.vocab} has {len(names)} names but {args.vocab_embeddings} has "
                                    f"{len(v)} rows; line i of the names file must name row i")
        run = pipeline.compute_run(params, x, pipeline.TextEmbeddings(names, v), cache_root=args.cache,
                                   progress=progress)
        run.facts["source"] = "embeddings"
        return run
    if args.pretrained.lower() == "none" and args.checkpoint is None and params.model.kind == "builtin":
        print("WARNING: --pretrained none builds the model with RANDOM weights: the clusters mean nothing. "
              "Use it only to smoke-test an install.", file=sys.stderr)
    vocab = pipeline.build_vocabulary(args.vocab, args.vocab_extra, _comma_list(args.vocab_categories),
                                      _comma_list(args.vocab_subtree))
    return pipeline.cluster_image_folder(args.images, vocab, params, cache_root=args.cache, progress=progress)


def _audit(run: ClusterRun) -> dict[str, str]:
    """``audit.csv`` of the run (:mod:`tac_core.run.run_audit`), its seconds added to the run's timings."""
    from .run_audit import AUDIT_FILE, audit_csv, audit_run  # torch: only once a run is there to audit

    print(f"auditing {len(run.labels)} images", file=sys.stderr)
    start = time.perf_counter()
    text = audit_csv(run, audit_run(run))
    run.timings["audit"] = time.perf_counter() - start
    return {AUDIT_FILE: text}


def main(argv: Optional[Sequence[str]] = None) -> int:
    started = time.perf_counter()
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run-job":
            from .job import main as run_job_main
            return run_job_main(args.workspace, args.run)
        if args.command == "embed":
            print(embed_cli.run(args, progress_printer()), file=sys.stderr)
            return 0
        if args.command == "workspace":
            return workspace_cli.main(args)
        if args.command == "classify":
            print(classify_cli.run(args), file=sys.stderr)
            return 0
        result = run_cluster(args)
        write_cluster_outputs(result, args.out, {} if args.no_audit else _audit(result))
    except TacError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("error: interrupted; nothing was written to the output folder", file=sys.stderr)
        return 130
    except Exception as exc:  # an engine bug: still one line, unless the user asks for the traceback
        if os.environ.get("TAC_DEBUG"):
            raise
        print(f"error: unexpected failure ({type(exc).__name__}: {exc}); rerun with TAC_DEBUG=1 for details",
              file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({len(result.labels)} images, {result.n_clusters} clusters) "
          f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0
