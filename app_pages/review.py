"""Step 4: review a run — map, clusters, galleries; every correction is one event in the review log."""
from ui import review_view

review_view.render()
