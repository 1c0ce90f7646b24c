"""The workspace layer: a project folder with its SQLite database (images, vocabulary sets, runs, the review
event log), ingest of images into it, review sessions with undo and redo, and label export.

Imports the base modules, :mod:`tac_core.inputs` and :mod:`tac_core.cluster`; never the run layer above it.
"""
