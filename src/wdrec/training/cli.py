"""The Lightning CLI for wdrec: ``fit``, ``validate``, ``test``, ``predict``.

Data sizes are linked into the model at instantiation, checkpointing and early stopping
are always on (configurable under ``checkpoint.*`` (best), ``last_checkpoint.*`` and
``early_stopping.*``; what they monitor is the task's selection metric,
:func:`~wdrec.training.metrics.selection_for`), so are the training diagnostics (``diagnostics.*``, see
:mod:`wdrec.training.diagnostics`), runs are tracked in MLflow (``trainer.logger``), and
the resolved config is logged into the run.

A config file may be composed of others: a top-level ``compose:`` list of files (relative to
it) is read first, in order, as if each were given with its own ``--config`` before it.
jsonargparse has no includes (a nested ``config:`` key replaces a subclass group such as
``data`` instead of merging it), while repeated ``--config`` merges, and ``features+:``
appends to a list across files. So one job file names its parts (``configs/features/``,
``configs/selection/``) and the feature list is written once.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from wdrec.training.callbacks import TrainingPlots
from wdrec.training.diagnostics import TrainingDiagnostics
from wdrec.training.metrics import EvaluatedData, selection_for

COMPOSE = "compose"


class ConfigFileError(ValueError):
    """A config file that cannot be composed (a missing part, a cycle, not a mapping)."""


class WideDeepCLI(LightningCLI):
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        from_command_line = args is None
        if args is None or isinstance(args, Sequence):
            args = expand_composed_configs(list(sys.argv[1:] if args is None else args))
        with warnings.catch_warnings():
            if from_command_line:  # these args are the command line, expanded: not the mix Lightning warns of
                warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
            super().parse_arguments(parser, args)

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


def expand_composed_configs(argv: list[str]) -> list[str]:
    """``argv`` with each ``--config FILE`` whose file has a ``compose:`` list replaced by a
    ``--config`` per part (recursively), then the file's own keys, if any, as YAML text."""
    expanded: list[str] = []
    position = 0
    while position < len(argv):
        argument = argv[position]
        if argument in ("--config", "-c") and position + 1 < len(argv):
            expanded += _config_arguments(argv[position + 1], ())
            position += 2
        elif argument.startswith("--config="):
            expanded += _config_arguments(argument.removeprefix("--config="), ())
            position += 1
        else:
            expanded.append(argument)
            position += 1
    return expanded


def _config_arguments(value: str, composing: tuple[Path, ...]) -> list[str]:
    path = Path(value)
    if not path.is_file() or path.suffix not in (".yaml", ".yml"):
        return ["--config", value]  # YAML text, or a missing file: jsonargparse reports it
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict) or COMPOSE not in document:
        return ["--config", value]
    parts = document.pop(COMPOSE)
    if not isinstance(parts, list) or not all(isinstance(part, str) for part in parts):
        raise ConfigFileError(f"{path}: `{COMPOSE}` must be a list of config files, got {parts!r}")
    arguments: list[str] = []
    for part in parts:
        child = (path.parent / part).resolve()
        if not child.is_file():
            raise ConfigFileError(f"{path}: `{COMPOSE}` names {part}, but {child} does not exist")
        if child in composing or child == path.resolve():
            raise ConfigFileError(f"{path}: `{COMPOSE}` names {part}, which composes {path} again")
        arguments += _config_arguments(str(child), (*composing, path.resolve()))
    # The file's own keys last, as text: relative paths among them read from the working directory.
    return arguments + (["--config", yaml.safe_dump(document)] if document else [])


def selected_metric(data: EvaluatedData) -> str:
    return selection_for(data).metric


def selected_mode(data: EvaluatedData) -> str:
    return selection_for(data).mode


def quiet_known_warnings() -> None:
    """Warnings that do not apply to wdrec's in-memory, vectorised loaders or to its model (which
    shards nothing that weight averaging would miss), deprecations inside Lightning's own use of
    jsonargparse and torch that users cannot act on, Lightning's advert for its cloud logger, and
    MLflow's progress bar over the few small files registering reads back."""
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for message in (
        r".*does not have many workers.*",
        r".*IterableDataset.*__len__.*",
        r".*Your `IterableDataset` has `__len__` defined.*",
        r".*The number of training batches .* is smaller than the logging interval.*",
        r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
        r".*WeightAveraging callback with a model that overrides the configure_model.*",  # ours only compiles
    ):
        warnings.filterwarnings("ignore", message=message)
    lightning_info = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, WithoutAdverts) for f in lightning_info.filters):
        lightning_info.addFilter(WithoutAdverts())


class WithoutAdverts(logging.Filter):
    """Drops Lightning's tips to install its cloud products (LitLogger, litmodels) from the output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()
