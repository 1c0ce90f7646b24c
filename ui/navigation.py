"""The app's pages and the router that every entry point goes through.

``app.py`` calls :func:`run`: it declares the pages in the sidebar's order and sections (title, Material icon,
tooltip; the URL is the file name: ``/review``, the home page is ``/``), sets the browser tab and the logo, and
runs the page the URL asks for. Each file in ``pages/`` draws its page through :func:`page`.

Why pages call :func:`page` instead of drawing directly: Streamlit still serves a ``pages/`` folder the legacy
way (each file as its own app) until some session has run ``app.py`` once, so on a freshly started server a
bookmarked ``/review`` runs ``pages/review.py`` without the router. :func:`page` notices that and routes
first, so such a visit gets the same sidebar, settings and checks as any other.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import streamlit as st

from ui import identity

ASSETS = Path(__file__).resolve().parent.parent / "assets"
HOME = "pages/workspaces.py"
#: section → pages as (file, title, Material icon, tooltip), in the sidebar's order
SECTIONS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "": ((HOME, "Workspaces", ":material/home:", "Create, open, rename or delete a workspace"),),
    "Prepare": (
        ("pages/images.py", "Images", ":material/photo_library:", "Step 1: add photos"),
        ("pages/vocabulary.py", "Vocabulary", ":material/dictionary:", "Step 2: the terms TAC may use"),
        ("pages/cluster.py", "Cluster", ":material/bubble_chart:", "Step 3: run TAC"),
    ),
    "Check and export": (
        ("pages/review.py", "Review", ":material/fact_check:", "Step 4: check and fix the clusters"),
        ("pages/audit.py", "Audit", ":material/troubleshoot:", "Step 4: likely misclusters first"),
        ("pages/export.py", "Export", ":material/download:", "Step 5: verified labels as CSV"),
        ("pages/history.py", "History", ":material/history:", "Who decided what, and who approved each cluster"),
    ),
}
#: the workflow's pages after the home page, in order, each with what it is for (the home page lists them)
STEPS = tuple((path, tip) for section, pages in SECTIONS.items() if section for path, _, _, tip in pages)

_routing = threading.local()  # one script run per thread: set while the router runs the chosen page


def run() -> None:
    """Declare the pages, set up the tab and the logo, and run the page the URL asks for, for a signed-in user on
    a server that may serve at all (``ui/identity.py``); anyone else gets the refusal page and nothing more."""
    # the app's own favicon before the navigation: otherwise the browser fetches the page's Material icon from Google
    st.set_page_config(page_icon=str(ASSETS / "logo_icon.svg"), layout="wide")
    refused = identity.problem()
    user = None if refused else identity.signed_in()
    chosen = st.navigation({section: [st.Page(path, title=title, icon=icon, help=tip, default=path == HOME)
                                      for path, title, icon, tip in pages]
                            for section, pages in SECTIONS.items()}, position="sidebar" if user else "hidden")
    st.logo(str(ASSETS / "logo.svg"), icon_image=str(ASSETS / "logo_icon.svg"), size="large")
    if user is None:
        st.set_page_config(page_title="TAC Studio")
        identity.refusal_page(refused)
        return
    st.set_page_config(page_title=f"{chosen.title} · TAC Studio")
    identity.sidebar()
    _routing.active = True
    try:
        chosen.run()
    finally:
        _routing.active = False


def page(render: Callable[[], None]) -> None:
    """Draw a page file's page: directly when the router runs it, through the router otherwise."""
    if getattr(_routing, "active", False):
        render()
    else:
        run()
