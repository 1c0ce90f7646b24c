"""TAC Studio's engine: Text-Aided Clustering of image collections, free of any UI."""

__version__ = "0.1.0"
