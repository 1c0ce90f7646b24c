"""How the Cluster page words a run's choices; the Review page quotes them in its advice (no torch to load here)."""
from __future__ import annotations

BALANCE_LABELS = {"estimated": "From the data (recommended)", "uniform": "Equal, as in the TAC paper"}
MODE_LABELS = {"free": "Training-free (fast; TAC without training)",
               "trained": "Trained heads (slower; usually a little better)"}
LAYOUT_LABELS = {"umap": "UMAP (default; a few seconds to minutes)", "pca": "PCA (instant, less faithful)"}
