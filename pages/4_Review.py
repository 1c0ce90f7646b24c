"""Step 4: review a run — map, clusters, galleries; every correction is one event in the review log."""
from ui import review_view, widgets

widgets.page_setup("Review")
review_view.render_review_page()
