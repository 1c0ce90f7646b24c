"""Step 4, audit: the images most likely to be in the wrong cluster first, one-click decisions, re-cluster.

The file name's emoji gives the sidebar entry its icon and the label "Audit", sorted right after "Review"
(a name like ``4b_Audit.py`` would be listed as "b Audit").
"""
from ui import audit_view, widgets

widgets.page_setup("Audit")
audit_view.render_audit_page()
