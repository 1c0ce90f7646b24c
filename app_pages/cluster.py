"""Step 3: start, watch, cancel and re-run clustering runs."""
from ui import cluster_view

cluster_view.render()
