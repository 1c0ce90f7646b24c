"""Home: what TAC Studio does, and the workspaces (list, create, open, rename, delete)."""
from ui import home_view, navigation

navigation.page(home_view.render)
