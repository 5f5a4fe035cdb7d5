"""Where runs and registered models live: one answer for ``wdrec fit`` and ``wdrec-serve``.

MLflow >= 3.13 refuses Lightning's default ``./mlruns`` file store, so without
``$MLFLOW_TRACKING_URI`` both use a sqlite file in the working directory (DESIGN.md).
"""

from __future__ import annotations

import os

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The given URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
