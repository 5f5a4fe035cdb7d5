"""MLflow tracking with wdrec's defaults, and the resolved config logged into each run.

Two facts shape this file (DESIGN.md): MLflow >= 3.13 refuses Lightning's default
``./mlruns`` file store, so the default here is ``sqlite:///mlflow.db`` in the working
directory (``$MLFLOW_TRACKING_URI`` wins when set); and LightningCLI's own
``SaveConfigCallback`` fails without a ``log_dir``, so the config is logged to MLflow by
:class:`LogConfigToMLflow` instead.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

import wdrec

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The given URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail before training, not after it, when the tracking store cannot be reached."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
                pass
        except (urllib.error.URLError, OSError) as error:
            raise RuntimeError(
                f"MLflow tracking server {uri} is unreachable ({error}). Start it, fix MLFLOW_TRACKING_URI, "
                f"or unset it to track locally in {DEFAULT_TRACKING_URI}."
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).expanduser().resolve().parent
        if not folder.is_dir():
            raise RuntimeError(f"MLflow tracking URI {uri}: folder {folder} does not exist")


def git_commit() -> str | None:
    """The commit of the checkout wdrec runs from (an editable install), if it is one."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(wdrec.__file__).parent)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


class MLflowTracking(MLFlowLogger):
    """Lightning's ``MLFlowLogger`` with a working default store and provenance tags.

    Args:
        experiment_name: MLflow experiment (created when missing).
        tracking_uri: defaults to ``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``.
        run_name, tags, run_id, artifact_location: as in ``MLFlowLogger``.
    """

    def __init__(
        self,
        experiment_name: str = "wdrec",
        tracking_uri: str | None = None,
        run_name: str | None = None,
        tags: dict[str, Any] | None = None,
        run_id: str | None = None,
        artifact_location: str | None = None,
    ) -> None:
        uri = resolve_tracking_uri(tracking_uri)
        check_tracking_uri(uri)
        provenance = {"wdrec_version": wdrec.__version__}
        if commit := git_commit():
            provenance |= {"git_commit": commit, "mlflow.source.git.commit": commit}
        super().__init__(
            experiment_name=experiment_name,
            tracking_uri=uri,
            run_name=run_name,
            tags={**provenance, **(tags or {})},
            run_id=run_id,
            artifact_location=artifact_location,
            log_model=False,  # the registry callback logs one pyfunc model, not raw checkpoints
        )


def mlflow_logger(trainer: L.Trainer) -> MLFlowLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


class LogConfigToMLflow(SaveConfigCallback):
    """Log the resolved CLI config and the FeatureSpec to the MLflow run, and keep both in
    every checkpoint so that ``wdrec-export`` can rebuild data and model from it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False})
        self.config_yaml = self.parser.dump(self.config, skip_none=False)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer)
        if logger is None:
            return
        logger.experiment.log_text(logger.run_id, self.config_yaml, "config.yaml")
        datamodule = trainer.datamodule
        logger.experiment.log_dict(logger.run_id, datamodule.feature_spec.to_dict(), "feature_spec.json")
        logger.experiment.log_dict(logger.run_id, datamodule.data.summary(), "data_summary.json")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["wdrec_config"] = self.config_yaml
        checkpoint["feature_spec"] = trainer.datamodule.feature_spec.to_dict()
