"""Showing user text safely: file names, terms and labels may hold markdown, HTML or script and must appear as
typed, never rendered."""
from __future__ import annotations

import re

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=^&])")


def esc(text: object) -> str:
    """``text`` with every character markdown could interpret backslash-escaped, and line breaks as spaces, for
    places that render markdown (st.error/success/…, widget labels, captions, st.markdown)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))
