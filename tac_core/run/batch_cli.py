"""``python -m tac_core workspace intake|metadata``: a new batch and where images come from, from a shell::

    python -m tac_core workspace add "Line 3" /data/line3/2024-06-02
    python -m tac_core workspace intake "Line 3" --run 4          # sort the batch into run 4 as reviewed
    python -m tac_core workspace metadata "Line 3" --pattern "{line}/{camera}/{date}_{serial}.png" --preview
    python -m tac_core workspace metadata "Line 3" --pattern "{line}/{camera}/{date}_{serial}.png"
    python -m tac_core workspace metadata "Line 3" --csv parts.csv
    python -m tac_core workspace metadata "Line 3" --flags --run 4  # clusters one line or camera dominates

``intake`` calls :func:`tac_core.run.intake.intake_new_images` (one undoable event in the run's review log,
as the Review page's button records) and prints the event id; ``metadata`` calls
:mod:`tac_core.workspace.metadata`. Lists are CSV on stdout, messages on stderr, as the other verbs.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..devices import DEVICES
from ..errors import InvalidInputError
from ..workspace import metadata
from ..workspace.metadata_summary import dominance_flags, state_metadata
from ..workspace.review import ReviewSession
from ..workspace.workspace import Workspace
from .terminal import progress_printer


def add_verbs(verbs, named) -> None:
    """Register ``intake`` and ``metadata`` on the workspace verbs."""
    intake = verbs.add_parser("intake", parents=[named], help="sort images added after a run into it as reviewed; "
                                                                "prints the event id")
    intake.add_argument("--run", type=int, help="run id (default: the newest finished run)")
    intake.add_argument("--device", default="auto", choices=DEVICES)
    meta = verbs.add_parser("metadata", parents=[named], help="image metadata: list fields, read them from paths or "
                                                               "a CSV, flag dominated clusters")
    action = meta.add_mutually_exclusive_group()
    action.add_argument("--pattern", help="read fields from paths, e.g. '{line}/{camera}/{date}_{serial}.png'")
    action.add_argument("--csv", type=Path, help="join a CSV with a relative_path or file_name column")
    action.add_argument("--remove", metavar="FIELD", help="delete a field from every image")
    action.add_argument("--flags", action="store_true", help="clusters one value of a field dominates, as text")
    meta.add_argument("--preview", action="store_true", help="with --pattern: show what it reads, store nothing")
    meta.add_argument("--run", type=int, help="with --flags: run id (default: the newest finished run)")


def run_verb(workspace: Workspace, args) -> int:
    """Run ``intake`` or ``metadata`` on an open workspace."""
    if args.verb == "intake":
        return _intake(workspace, args)
    return _metadata(workspace, args)


def _intake(workspace: Workspace, args) -> int:
    from .intake import intake_new_images
    from .workspace_cli import newest_done

    session = ReviewSession(workspace, newest_done(workspace, args.run), session_id="cli")
    result = intake_new_images(session, device=args.device, progress=progress_printer())
    print(result.edit.event_id)
    print(f"run {session.run_id}: {result.edit.text}", file=sys.stderr)
    return 0


def _metadata(workspace: Workspace, args) -> int:
    from .workspace_cli import newest_done, write_csv

    if args.preview and args.pattern is None:
        raise InvalidInputError("--preview only applies with --pattern")
    if args.run is not None and not args.flags:
        raise InvalidInputError("--run only applies with --flags")
    if args.pattern is not None and args.preview:
        preview = metadata.preview_pattern(workspace, args.pattern)
        write_csv(list(preview.rows.columns), preview.rows.itertuples(index=False, name=None))
        print(f"the pattern fits {preview.matched:,} of {preview.total:,} images", file=sys.stderr)
        return 0
    if args.pattern is not None or args.csv is not None:
        if args.pattern is not None:
            result = metadata.apply_pattern(workspace, args.pattern)
        else:
            try:
                data = args.csv.read_bytes()
            except OSError as exc:
                raise InvalidInputError(f"the CSV {args.csv} cannot be read ({exc.strerror or exc}).") from exc
            result = metadata.join_csv(workspace, args.csv.name, data)
        print(f"stored {result.summary()}", file=sys.stderr)
        return 0
    if args.remove is not None:
        print(f"removed {metadata.remove_field(workspace, args.remove)} value(s) of {args.remove!r}", file=sys.stderr)
        return 0
    if args.flags:
        session = ReviewSession(workspace, newest_done(workspace, args.run), session_id="cli")
        for flag in dominance_flags(session.state, state_metadata(workspace, session.state)):
            print(flag.text)
        return 0
    fields = metadata.metadata_fields(workspace)
    write_csv(list(fields.columns), fields.itertuples(index=False, name=None))
    return 0
