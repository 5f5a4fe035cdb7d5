"""The Lightning CLI for wdrec: ``fit``, ``validate``, ``test``, ``predict``.

Data sizes are linked into the model at instantiation, checkpointing and early stopping
are always on (configurable under ``checkpoint.*`` (best), ``last_checkpoint.*`` and
``early_stopping.*``; what they monitor is the task's selection metric,
:func:`~wdrec.training.metrics.selection_for`), so are the training diagnostics (``diagnostics.*``, see
:mod:`wdrec.training.diagnostics`), runs are tracked in MLflow (``trainer.logger``), and
the resolved config is logged into the run.
"""

from __future__ import annotations

import os
import warnings

from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from wdrec.training.callbacks import TrainingPlots
from wdrec.training.diagnostics import TrainingDiagnostics
from wdrec.training.metrics import EvaluatedData, selection_for


class WideDeepCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.layout", "model.layout", apply_on="instantiate")
        parser.link_arguments("data.task", "model.task", apply_on="instantiate")
        parser.link_arguments("data.output_bias", "model.output_bias", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")  # the best epoch, for export
        parser.set_defaults({"checkpoint.dirpath": "checkpoints", "checkpoint.filename": "best-{epoch:02d}"})
        # Every epoch's end, overwritten, for `--ckpt_path last`: Lightning's own save_last only
        # writes when the monitored metric improves, so a resume could restart epochs back.
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults({"last_checkpoint.dirpath": "checkpoints", "last_checkpoint.filename": "last",
                             "last_checkpoint.enable_version_counter": False})  # fmt: skip
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.patience": 3})
        for selected in ("checkpoint", "early_stopping"):  # the task's selection metric (registry and scheduler too)
            parser.link_arguments("data", f"{selected}.monitor", compute_fn=selected_metric, apply_on="instantiate")
            parser.link_arguments("data", f"{selected}.mode", compute_fn=selected_mode, apply_on="instantiate")
        parser.add_lightning_class_args(TrainingPlots, "plots")
        parser.add_lightning_class_args(TrainingDiagnostics, "diagnostics")  # --diagnostics.every_n_steps, .enabled


def selected_metric(data: EvaluatedData) -> str:
    return selection_for(data).metric


def selected_mode(data: EvaluatedData) -> str:
    return selection_for(data).mode


def quiet_known_warnings() -> None:
    """Warnings that do not apply to wdrec's in-memory, vectorised loaders, and
    deprecations inside Lightning's own use of jsonargparse that users cannot act on."""
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    for message in (
        r".*does not have many workers.*",
        r".*IterableDataset.*__len__.*",
        r".*Your `IterableDataset` has `__len__` defined.*",
        r".*The number of training batches .* is smaller than the logging interval.*",
    ):
        warnings.filterwarnings("ignore", message=message)
