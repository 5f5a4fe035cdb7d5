"""``wdrec``: the training command line (the composition root: the one module that wires
every stage together, so that ``training`` never imports ``export``)."""

from __future__ import annotations

from jsonargparse import lazy_instance
from lightning.pytorch.cli import LightningArgumentParser

from wdrec.data.datamodule import InteractionDataModule
from wdrec.export.callback import RegisterModel
from wdrec.training.cli import WideDeepCLI, quiet_known_warnings
from wdrec.training.module import WideDeepModule
from wdrec.training.tracking import LogConfigToMLflow, MLflowTracking


class WdrecCLI(WideDeepCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_lightning_class_args(RegisterModel, "registry")


def main(args: list[str] | None = None) -> None:
    run(args)


def run(args: list[str] | None = None, subcommand: bool = True) -> WdrecCLI:
    """Run the CLI and return it (tests and benchmarks read its trainer, model and data).

    With ``subcommand=False`` the objects are built from ``args`` but nothing runs.
    """
    quiet_known_warnings()
    return WdrecCLI(
        WideDeepModule,
        InteractionDataModule,
        save_config_callback=LogConfigToMLflow,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"logger": lazy_instance(MLflowTracking)},
        seed_everything_default=42,
        args=args,
        run=subcommand,
    )


if __name__ == "__main__":
    main()
