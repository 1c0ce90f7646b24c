"""Step 2: the terms TAC may use (WordNet nouns and your own), saved as named vocabulary sets."""
from ui import navigation, vocabulary_view

navigation.page(vocabulary_view.render)
