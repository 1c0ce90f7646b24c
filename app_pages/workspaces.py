"""Home: what TAC Studio does, and the workspaces (list, create, open, rename, delete)."""
from ui import home_view

home_view.render()
