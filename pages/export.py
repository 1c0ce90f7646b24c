"""Step 5: export reviewed labels as CSV."""
from ui import export_view, navigation

navigation.page(export_view.render)
