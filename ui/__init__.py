"""Streamlit helpers shared by the pages: which workspace and run are open, and how errors are shown.

Nothing here computes: it only remembers the user's place and draws. The engine is ``tac_core``.
"""
