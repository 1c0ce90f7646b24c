"""TAC Studio: the home page (workspaces). Run with ``streamlit run app.py`` (or scripts/start.sh)."""
from ui import home_view, widgets

widgets.page_setup("Workspaces")
home_view.render()
