"""The embedding layer: CLIP models (open_clip names, checkpoints, local folders), text and image encoding, and
the on-disk vector cache that makes a second run embed nothing.

Imports the base modules and :mod:`tac_core.inputs`; knows nothing of workspaces or clustering.
"""
