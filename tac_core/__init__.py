"""TAC Studio's engine: Text-Aided Clustering of image collections, free of any UI."""
