"""Who approved each cluster, and every decision of a run: filter, read, download."""
from ui import history_view, navigation

navigation.page(history_view.render)
