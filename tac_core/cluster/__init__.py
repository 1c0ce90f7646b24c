"""The clustering layer: TAC and everything that works on embedding arrays (k-means, neighbours, heads, anchors,
metrics, K suggestion, audit signals, re-clustering, splits, the 2-D map, the synthetic bed).

numpy, torch, scikit-learn and umap only: nothing here loads a model, reads an image or opens a database.
The options a run description names are here, importable without torch (the command line checks its arguments
before the heavy libraries load).
"""

MODES = ("free", "trained")  # free: k-means on [image, counterpart]; trained: two cluster heads
BALANCES = ("estimated", "uniform")  # cluster sizes: estimated from the data, or equal as in the paper
