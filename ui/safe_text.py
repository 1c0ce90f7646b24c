"""Text a user typed (workspace and cluster names, anchor terms, file names, error messages naming them) shown
as text, never as markup: the app's one place for it.

Streamlit renders Markdown in headings, captions, alerts and widget labels. Pages never put user text there
directly: they use ``st.text`` or dataframes, or pass it through one of these helpers first; the app's own
components (the Review map and size bars) get it as data and write it as text.
"""
from __future__ import annotations

import re

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=^&])")


def esc(text: object) -> str:
    """``text`` with every character Markdown could interpret backslash-escaped, and line breaks as spaces, for
    places that render Markdown (st.error/success/…, widget labels, captions, st.markdown)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def short(text: object, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (for select options, which are plain text)."""
    text = str(text).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def middle(text: object, limit: int) -> str:
    """``text`` cut in the middle to ``limit`` characters (for file names: the start and the extension stay)."""
    text = str(text).replace("\n", " ")
    if len(text) <= limit:
        return text
    tail = max(1, (limit - 1) // 2)  # the start keeps the folder, the end the number and the extension
    return text[: limit - 1 - tail] + "…" + text[-tail:]
