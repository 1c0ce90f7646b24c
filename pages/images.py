"""Step 1: add images to the open workspace."""
from ui import images_view, navigation

navigation.page(images_view.render)
