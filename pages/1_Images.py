"""Step 1: add images to the open workspace."""
from ui import images_view, widgets

widgets.page_setup("Images")
images_view.render()
