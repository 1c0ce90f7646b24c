"""``python -m bench``: the performance suite of :mod:`bench.perf` (see its docstring for the options)."""
from bench.perf import main

main()
