"""Step 5: export reviewed labels as CSV."""
from ui import export_view

export_view.render()
