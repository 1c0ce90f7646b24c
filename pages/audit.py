"""Step 4, audit: the images most likely to be in the wrong cluster first, one-click decisions, re-cluster."""
from ui import audit_view, navigation

navigation.page(audit_view.render)
