"""Keep Streamlit's garbage collection after each script run cheap.

Streamlit runs a full ``gc.collect(2)`` after every script run, fragment runs included (``runner.postScriptGC``),
to free reference cycles a run left behind. A full collection walks every tracked object, and the app's imports
alone (Streamlit, pandas, PyArrow, torch once a page needs it) are ~120,000–500,000 of them: 50–300 ms
after every click on a 2-core machine, most of what a reviewer waited for. Objects that exist when the imports
are done live as long as the process, so they are moved out of the collector's sight (``gc.freeze``) once after
each run that imported something new; collections then only walk what runs created since.
"""
from __future__ import annotations

import gc
import sys
import threading

_lock = threading.Lock()
_modules_at_freeze = 0


def freeze_after_imports() -> None:
    """If modules were imported since the last call, collect once and freeze what survives (a few hundred ms,
    once per new set of imports)."""
    global _modules_at_freeze
    if len(sys.modules) == _modules_at_freeze:
        return
    with _lock:
        if len(sys.modules) != _modules_at_freeze:
            gc.collect()
            gc.freeze()
            _modules_at_freeze = len(sys.modules)
