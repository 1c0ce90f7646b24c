"""Step 3: start, watch, cancel and re-run clustering runs."""
from ui import cluster_view, widgets

widgets.page_setup("Cluster")
cluster_view.render()
