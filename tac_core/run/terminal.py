"""How the command line talks to a person at a terminal: progress lines on stderr, run parameters that are
wrong reported under the flag that gave them, and arrays read from files the user named."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

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


def load_npy(path: Path, what: str) -> np.ndarray:
    """A 2-D float32 array of real, finite numbers from a .npy file the user named, or one clear error."""
    if not path.is_file():
        raise InvalidInputError(f"{what} file {path} does not exist")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InvalidInputError(f"{what} file {path} is not a readable .npy array ({exc})") from exc
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InvalidInputError(f"{what} file {path} must hold a 2-D array of real numbers; it holds {array.dtype} "
                                f"of shape {array.shape}")
    array = array.astype(np.float32)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise InvalidInputError(f"{what} file {path} has NaN or infinite values (or values too large for float32) "
                                f"in {int(bad.sum())} row(s), first at row {int(np.argmax(bad))}; re-create it")
    return array
