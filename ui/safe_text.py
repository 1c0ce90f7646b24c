"""Text a user typed (cluster names, anchor terms, file names) shown as text, never as markup.

Streamlit renders Markdown in headings, captions, alerts and widget labels, and Plotly renders a subset of
HTML in legends and hover labels. The review pages never put user text there directly: they use ``st.text``
or dataframes, or pass it through one of these helpers first.
"""
from __future__ import annotations

import html

from ui.text import esc as md  # Markdown contexts (alerts, captions, labels): the app's one escaping rule

__all__ = ["md", "plotly_text", "short"]


def plotly_text(text: object, limit: int = 60) -> str:
    """``text`` for a Plotly label: HTML entities escaped (Plotly decodes them back to the literal characters)."""
    text = str(text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=True)


def short(text: object, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (for select options, which are plain text)."""
    text = str(text).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
