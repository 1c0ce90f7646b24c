"""TAC Studio's entry point and router: ``streamlit run app.py`` (or scripts/start.sh).

Every rerun declares the pages in the sidebar's order and sections (title, Material icon, tooltip; the URL is
the file name: ``/review``, the home page is ``/``), sets the browser tab and the logo, and runs the page the
URL asks for. Pages link to each other by file (``st.page_link("app_pages/review.py")``) and Streamlit takes
the title and tooltip from here. The folder is ``app_pages/``, not ``pages/``: Streamlit still auto-discovers a
``pages/`` folder (its legacy multipage convention) until some session has run this file, so on a freshly
started server a bookmarked ``/review`` would open without this router, under a sidebar of file names.
"""
from pathlib import Path

import streamlit as st

ASSETS = Path(__file__).resolve().parent / "assets"

# the app's own favicon before the navigation: otherwise the browser fetches the page's Material icon from Google
st.set_page_config(page_icon=str(ASSETS / "logo_icon.svg"), layout="wide")
page = st.navigation({
    "": [st.Page("app_pages/workspaces.py", title="Workspaces", icon=":material/home:", default=True,
                 help="Create, open, rename or delete a workspace")],
    "Prepare": [
        st.Page("app_pages/images.py", title="Images", icon=":material/photo_library:",
                help="Step 1: add photos"),
        st.Page("app_pages/vocabulary.py", title="Vocabulary", icon=":material/dictionary:",
                help="Step 2: the terms TAC may use"),
        st.Page("app_pages/cluster.py", title="Cluster", icon=":material/bubble_chart:",
                help="Step 3: run TAC"),
    ],
    "Check and export": [
        st.Page("app_pages/review.py", title="Review", icon=":material/fact_check:",
                help="Step 4: check and fix the clusters"),
        st.Page("app_pages/audit.py", title="Audit", icon=":material/troubleshoot:",
                help="Step 4: likely misclusters first"),
        st.Page("app_pages/export.py", title="Export", icon=":material/download:",
                help="Step 5: verified labels as CSV"),
    ],
})
st.set_page_config(page_title=f"{page.title} · TAC Studio")
st.logo(str(ASSETS / "logo.svg"), icon_image=str(ASSETS / "logo_icon.svg"), size="large")
page.run()
