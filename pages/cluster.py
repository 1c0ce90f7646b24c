"""Step 3: start, watch, cancel and re-run clustering runs."""
from ui import cluster_view, navigation

navigation.page(cluster_view.render)
