"""Bundles, the MLflow pyfunc model over them, and the model registry."""
