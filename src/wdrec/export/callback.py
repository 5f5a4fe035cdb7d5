"""End of ``wdrec fit``: the best weights become a bundle, an MLflow model and a registry version."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from wdrec.data.io import atomic_write_text
from wdrec.export.bundle import METADATA, write_bundle
from wdrec.export.model_card import (
    CARD_FILE,
    MAX_DESCRIPTION,
    ModelCard,
    checkout_dirty,
    describe_data,
    describe_hardware,
    render,
    validation_at,
)
from wdrec.model.widedeep import WideDeep
from wdrec.training.baselines import baselines
from wdrec.training.metrics import Selection, selection_for
from wdrec.training.module import WideDeepModule
from wdrec.training.tracking import LogConfigToMLflow

# The registered model of each training target, unless `registry.name` says otherwise.
REGISTERED_NAMES = {"implicit": "wdrec", "binary": "wdrec-ctr", "rating": "wdrec-rating"}


class RegisterModel(L.Callback):
    """Registers every completed fit; an interrupted or failed fit registers nothing.

    The ``champion`` alias is decided by the task's selection metric
    (:func:`~wdrec.training.metrics.selection_for`), the one that picked the best checkpoint.
    Each version carries a model card (:mod:`wdrec.export.model_card`) as its description, also
    logged as the run artifact ``model_card.md`` and kept in the bundle.

    Args:
        name: registered model name; by default one per task (:data:`REGISTERED_NAMES`), so that
            a rating model never competes with a ranking model for the same ``champion``.
        bundle_root: local folder for bundles (one per run id).
        enabled: set false to train without touching the registry.
    """

    def __init__(
        self,
        name: str | None = None,
        bundle_root: str = "bundles",
        enabled: bool = True,
    ) -> None:
        self.name = name
        self.bundle_root, self.enabled = Path(bundle_root), enabled
        self._started: float | None = None
        self._dirty: bool | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()
        if self.enabled and trainer.is_global_zero:
            self._dirty = checkout_dirty()  # the code as it runs, before anyone edits the checkout

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)
        if not self.enabled or trainer.interrupted or not trainer.is_global_zero or logger is None:
            return
        datamodule = trainer.datamodule
        name = self.name or REGISTERED_NAMES[datamodule.target]
        selection = selection_for(datamodule)
        value = self._best_value(trainer, selection.metric)
        last = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_") and v.numel() == 1}
        metadata = {"run_id": logger.run_id, "registered_model": name, "selection": {selection.metric: value},
                    "metrics": last}  # fmt: skip
        bundle = write_bundle(
            self.bundle_root / logger.run_id, best_network(trainer, pl_module), datamodule.feature_spec,
            datamodule.users_frame, datamodule.items_frame, metadata,
        )  # fmt: skip
        card = self._card(trainer, pl_module, name, logger, selection, value)
        text = render(card)
        atomic_write_text(bundle / CARD_FILE, text)  # beside the bundle's files, outside their checksums
        logger.experiment.log_text(logger.run_id, text, CARD_FILE)
        # Imported here: MLflow takes 1.5 s to import, and `wdrec fit` without a registry never needs it.
        from wdrec.export.registry import log_pyfunc_model, register

        registration = register(
            log_pyfunc_model(bundle, logger.run_id), name, selection.metric, value, selection.mode, datamodule.target,
            description=render(card, MAX_DESCRIPTION),
        )  # fmt: skip
        metadata_path = bundle / METADATA
        atomic_write_text(metadata_path, json.dumps({**json.loads(metadata_path.read_text()), "version": registration.version}, indent=2))
        logger.experiment.set_tag(logger.run_id, "registered_model_version", f"{name}/{registration.version}")
        status = "now champion" if registration.promoted else f"champion stays version {registration.previous_champion}"
        if registration.refused:
            rank_zero_warn(f"{name}: the champion alias was not moved: {registration.refused}")
        rank_zero_info(
            f"Registered {name} version {registration.version} ({selection.metric}={value:.4f}, {status}); bundle: {bundle}"
        )

    def _card(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str, logger: MLFlowLogger,
              selection: Selection, value: float) -> ModelCard:  # fmt: skip
        """The facts of the version about to be registered (:mod:`wdrec.export.model_card`)."""
        seconds = None if self._started is None else time.perf_counter() - self._started
        datamodule, client = trainer.datamodule, logger.experiment
        epoch, validation = validation_at(client, logger.run_id, selection.metric, value)
        if not validation:  # the best score is not in the run's history (a resumed fit): the last epoch's
            validation = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_") and v.numel() == 1}
        try:
            found, why = baselines(datamodule, "val")
        except Exception as error:  # a baseline must not cost the trained model its registration
            rank_zero_warn(f"{name}: model card baselines failed: {type(error).__name__}: {error}")
            found, why = {}, f"they failed ({type(error).__name__}: {error})"
        config = next((cb.config_yaml for cb in trainer.callbacks if isinstance(cb, LogConfigToMLflow)), None)
        test = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test_") and v.numel() == 1}
        return ModelCard(
            name, logger.run_id, datamodule.target, describe_data(datamodule), datamodule.feature_spec,
            pl_module.net.config, selection, validation, epoch, test, found, why, seconds,
            describe_hardware(trainer), config, client.get_run(logger.run_id).data.tags.get("git_commit"), self._dirty,
        )  # fmt: skip

    @staticmethod
    def _best_value(trainer: L.Trainer, metric: str) -> float:
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.monitor == metric and checkpoint.best_model_score is not None:
            return float(checkpoint.best_model_score)
        if metric not in trainer.callback_metrics:
            raise KeyError(f"RegisterModel: metric {metric!r} was never logged; logged: {sorted(trainer.callback_metrics)}")
        return float(trainer.callback_metrics[metric])


def best_network(trainer: L.Trainer, pl_module: L.LightningModule) -> WideDeep:
    """The network with the best checkpoint's weights (the live one when there is none)."""
    net = copy.deepcopy(pl_module.net).cpu().eval()
    checkpoint = trainer.checkpoint_callback
    path = getattr(checkpoint, "best_model_path", "")
    if path:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        net.load_state_dict(WideDeepModule.network_weights(state))
    return net
