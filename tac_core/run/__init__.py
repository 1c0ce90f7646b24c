"""The run layer: one clustering run from its description to its stored result — the run parameters, the
pipeline shared by the CLI and the app's jobs, the job process, output files and the command line.

The top of the engine: it may import every other layer; nothing in :mod:`tac_core` imports it.
"""
