"""Step 4: review a run — map, clusters, galleries; every correction is one event in the review log."""
from ui import navigation, review_view

navigation.page(review_view.render)
