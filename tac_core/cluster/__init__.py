"""The clustering layer: TAC and everything that works on embedding arrays (k-means, neighbours, heads, anchors,
metrics, K suggestion, audit signals, re-clustering, splits, the 2-D map, the synthetic bed).

numpy, torch, scikit-learn and umap only: nothing here loads a model, reads an image or opens a database.
"""
