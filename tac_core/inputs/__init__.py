"""The inputs layer: what a user gives the engine before anything is embedded — image files (decoding,
scanning folders, file lists and zips, thumbnails) and the vocabulary (WordNet, domain terms, vocabulary sets,
prompt templates).

Imports only the base modules (errors, progress, atomic); no model, no database.
"""
