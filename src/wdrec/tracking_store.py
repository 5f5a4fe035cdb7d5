"""Where runs and registered models live: one answer for ``wdrec fit`` and ``wdrec-serve``.

MLflow >= 3.13 refuses Lightning's default ``./mlruns`` file store, so without
``$MLFLOW_TRACKING_URI`` both use a sqlite file in the working directory (DESIGN.md).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached; raised before any training (or lookup) starts."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The given URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def check_tracking_uri(uri: str, timeout: float = 5.0, existing: bool = False) -> None:
    """Fail in seconds, not after MLflow's retries (minutes) or after training, when the tracking
    store cannot be reached. ``existing``: a sqlite store must already exist (looking a model up
    in one that does not would create an empty one)."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
                pass
        except (urllib.error.URLError, OSError) as error:
            raise TrackingUnavailable(
                f"MLflow tracking server {uri} is unreachable ({error}). Start it, fix MLFLOW_TRACKING_URI, "
                f"or unset it to track locally in {DEFAULT_TRACKING_URI}."
            ) from None
    elif uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///")).expanduser().resolve()
        if not path.parent.is_dir():
            raise TrackingUnavailable(f"MLflow tracking URI {uri}: folder {path.parent} does not exist")
        if existing and not path.is_file():
            raise TrackingUnavailable(f"MLflow tracking URI {uri}: no store at {path} (wdrec fit makes one)")
