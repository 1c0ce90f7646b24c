"""How the command line talks to a person at a terminal: progress lines on stderr, and run parameters that
are wrong reported under the flag that gave them."""
from __future__ import annotations

import sys

from ..errors import InvalidInputError, ParameterError


def progress_printer(stream=sys.stderr):
    """Progress on one rewritten line on a terminal; a line per 10 % otherwise (logs, CI)."""
    last: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stream.isatty():
            stream.write(f"\r{stage}: {done}/{total}   ")
            if done >= total:
                stream.write("\n")
        else:
            decile = 10 * done // max(total, 1)
            if last.get(stage) == decile:
                return
            last[stage] = decile
            stream.write(f"{stage}: {done}/{total}\n")
        stream.flush()
    return progress


def flag_error(exc: ParameterError, flags: dict[str, tuple[str, str]]) -> InvalidInputError:
    """A bad run parameter reported under the command-line flag that gave it (``flags``: field → (flag, what));
    the error itself when no flag gave that field."""
    if exc.field not in flags:
        return exc
    flag, what = flags[exc.field]
    if exc.minimum is None:
        return InvalidInputError(f"{flag} ({what}): {exc}")
    return InvalidInputError(f"{flag} ({what}) must be at least {exc.minimum}; got {exc.value}")
