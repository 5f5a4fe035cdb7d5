"""The training job, ``wdrec fit|validate|test|predict``: LightningCLI with every stage wired
in (the composition root: the one module that wires every stage together, so that
``training`` never imports ``export``). The ``wdrec`` command itself is :mod:`wdrec.cli`."""

from __future__ import annotations

import contextlib
import io

from jsonargparse import lazy_instance
from lightning.pytorch import Callback
from lightning.pytorch.cli import LightningArgumentParser

from wdrec.data.schema import DataError
from wdrec.data.sources.base import SourceUnavailable
from wdrec.export.callback import RegisterModel
from wdrec.tracking_store import TrackingUnavailable
from wdrec.training.cli import ConfigFileError, WideDeepCLI, quiet_known_warnings
from wdrec.training.module import WideDeepModule
from wdrec.training.tracking import LogConfigToMLflow, MLflowTracking, check_logger_config


class ConfigError(ValueError):
    """A config value the objects it configures refuse (raised while building them)."""


# Problems with the user's input or environment: `wdrec` reports them in one line, not a traceback.
USER_ERRORS = (DataError, SourceUnavailable, TrackingUnavailable, ConfigError, ConfigFileError)


class WdrecCLI(WideDeepCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_lightning_class_args(RegisterModel, "registry")
        # `data:` takes the in-memory module's arguments directly, or a class_path (streaming).
        parser.set_defaults({"data": {"class_path": "wdrec.data.datamodule.InteractionDataModule"}})

    def before_instantiate_classes(self) -> None:
        """Reach the tracking store before any data is read: an unreachable one stops in seconds."""
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
        check_logger_config(config.get("trainer", {}).get("logger"))

    def instantiate_classes(self) -> None:
        """Build data, model and trainer; a ValueError while doing so is a bad config value."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            if user_error(error) is not None:
                raise
            raise ConfigError(str(_innermost(error, ValueError))) from error


def user_error(error: BaseException) -> BaseException | None:
    """The first of ``USER_ERRORS`` in the error's chain (causes and contexts), if any."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo and len(seen) < 100:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, USER_ERRORS):
            return current
        todo += [current.__cause__, current.__context__]
    return None


def _innermost(error: BaseException, kind: type[BaseException]) -> BaseException:
    """The deepest ``kind`` in the error's chain of causes: the original complaint, not its wrappers."""
    found, current, depth = error, error.__cause__ or error.__context__, 0
    while current is not None and depth < 100:
        if isinstance(current, kind):
            found = current
        current, depth = current.__cause__ or current.__context__, depth + 1
    return found


def run(args: list[str] | None = None, subcommand: bool = True, callbacks: list[Callback] | None = None) -> WdrecCLI:
    """Run the CLI and return it (tests and benchmarks read its trainer, model and data).

    With ``subcommand=False`` the objects are built from ``args`` but nothing runs.
    ``callbacks`` are added to the trainer's, for objects no command line can carry
    (``wdrec tune``'s pruning callback holds its Optuna trial).
    """
    quiet_known_warnings()
    return WdrecCLI(
        WideDeepModule,
        None,
        subclass_mode_data=True,
        save_config_callback=LogConfigToMLflow,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"logger": lazy_instance(MLflowTracking), "callbacks": callbacks or []},
        seed_everything_default=42,
        args=args,
        run=subcommand,
    )


def resolved_config(args: list[str]) -> str:
    """The job as ``wdrec fit <args> --print_config`` prints it: every default filled in, ready
    for ``wdrec fit --config``. Nothing is instantiated; a bad argument exits as ``wdrec fit`` does."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            run(["fit", *args, "--print_config"])
    except SystemExit as done:
        if done.code:
            raise
    return printed.getvalue()

