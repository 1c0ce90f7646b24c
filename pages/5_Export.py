"""Step 5: export reviewed labels as CSV."""
from ui import export_view, widgets

widgets.page_setup("Export")
export_view.render()
