"""Plots a person would rather look at than read (training curves, the validation ROC), and
weight averaging whose checkpoints mean the same thing in every stage."""

from __future__ import annotations

import itertools
from typing import Any

import lightning as L
import matplotlib
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

matplotlib.use("Agg")  # no display on training machines

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchmetrics.functional.classification import binary_auroc, binary_roc  # noqa: E402

from wdrec.training.tracking import mlflow_logger  # noqa: E402

OPTIMIZER_FACTORIES = ("wide_optimizer", "deep_optimizer", "scheduler")  # attributes of WideDeepModule
CURVES = (("loss", ("train_loss", "val_loss")), ("AUC", ("val_auc",)), ("ranking", ("val_hr_10", "val_ndcg_10", "val_recall_10")),
          ("rating error", ("val_rmse", "val_mae")))  # fmt: skip


class TrainingPlots(L.Callback):
    """Collects per-epoch metrics and, at the end of ``fit``, logs two figures to MLflow:
    ``plots/training_curves.png`` and (binary task) ``plots/roc_curve.png``."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        self.history.append({"epoch": trainer.current_epoch, **metrics})

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = state_dict["history"]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero or trainer.interrupted:
            return
        logger.experiment.log_figure(logger.run_id, self.curves(), "plots/training_curves.png")
        if pl_module.net.config.task == "binary":
            logger.experiment.log_figure(logger.run_id, roc_figure(trainer, pl_module), "plots/roc_curve.png")
        plt.close("all")

    def curves(self) -> plt.Figure:
        panels = [(title, [k for k in keys if any(k in h for h in self.history)]) for title, keys in CURVES]
        panels = [(title, keys) for title, keys in panels if keys]
        figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.5 * max(1, len(panels)), 3.5), squeeze=False)
        for axis, (title, keys) in zip(axes[0], panels, strict=False):
            for key in keys:
                points = [(h["epoch"] + 1, h[key]) for h in self.history if key in h]
                axis.plot(*zip(*points, strict=True), marker="o", label=key)
            axis.set(title=title, xlabel="epoch")
            axis.grid(alpha=0.3)
            axis.legend()
        figure.tight_layout()
        return figure


@torch.no_grad()
def roc_figure(trainer: L.Trainer, pl_module: L.LightningModule) -> plt.Figure:
    """ROC of the model on the validation set's pointwise rows (positives and negatives)."""
    datamodule = trainer.datamodule
    pl_module.eval()
    scores, labels = [], []
    for batch in datamodule.val_dataloader()[0]:
        batch = datamodule.on_after_batch_transfer({k: v.to(pl_module.device) for k, v in batch.items()}, 0)
        scores.append(torch.sigmoid(pl_module(batch).float()).cpu())
        labels.append(batch["label"].long().cpu())
    score, label = torch.cat(scores), torch.cat(labels)
    fpr, tpr, _ = binary_roc(score, label)
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot(fpr, tpr, label=f"Wide&Deep (AUC {binary_auroc(score, label):.3f})")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axis.set(title="validation ROC", xlabel="false positive rate", ylabel="true positive rate")
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


class AveragedWeights(EMAWeightAveraging):
    """Lightning's exponential moving average of the weights, which validation sees and
    checkpoints (hence the bundle) hold, made to hold after ``fit`` too.

    Lightning's callback keeps its average after ``fit`` and, when a later stage loads a
    checkpoint (``trainer.test(ckpt_path="best")`` in the same process), restores the raw
    weights saved beside the average and swaps its own last average in for validation: the
    figures would not be the checkpoint's. Here the checkpoint's averaged weights are the
    model in every stage but a resumed ``fit``.

    Lightning's step update (``AveragedModel.update_parameters``) walks both modules and makes
    three new tensors per weight, every step: 1.3 ms of a PW step of about 10 ms at batch 512.
    Here the same arithmetic, ``decay * average + (1 - decay) * weight``, runs in place over the
    tensor lists gathered once per fit; the averages are the same, bit for bit."""

    def __init__(self, decay: float = 0.999, **kwargs: Any) -> None:
        super().__init__(decay=decay, **kwargs)
        self.decay = decay
        self._pairs: tuple | None = None  # see _gather

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._pairs = None  # gathered at the first step, once the module is on its device
        # The average is a deep copy of the module, and only its weights are used. The optimizer
        # factories hold the CLI's parser, which cannot be copied under DDP (a thread lock), so
        # they are left out of the copy.
        factories = {name: getattr(pl_module, name) for name in OPTIMIZER_FACTORIES}
        for name in factories:
            setattr(pl_module, name, None)
        try:
            super().setup(trainer, pl_module, stage)
        finally:
            for name, factory in factories.items():
                setattr(pl_module, name, factory)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        # Lightning's condition for a step update, with the update below.
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=trainer.global_step - 1):
            self._update(pl_module)
            self._latest_update_step = trainer.global_step

    @torch.no_grad()
    def _update(self, pl_module: L.LightningModule) -> None:
        average = self._average_model
        if self._pairs is None:
            self._pairs = self._gather(pl_module)
        if average.n_averaged == 0 or not self._pairs:  # the first update copies; or Lightning's own path
            average.update_parameters(pl_module)
            return
        averaged, current, counters = self._pairs
        torch._foreach_mul_(averaged, self.decay)
        torch._foreach_add_(averaged, torch._foreach_mul(current, 1 - self.decay))
        for a, c in counters:  # BatchNorm's step counts, averaged as Lightning does (then truncated)
            a.copy_(self.decay * a + (1 - self.decay) * c)
        average.n_averaged += 1

    def _gather(self, pl_module: L.LightningModule) -> tuple:
        """(averaged float tensors, the module's, integer pairs); empty where Lightning's own update must
        run: buffers not averaged (``use_buffers=False``), or the average kept on another device."""
        module = self._average_model.module
        pairs = list(zip(itertools.chain(module.parameters(), module.buffers()),
                         itertools.chain(pl_module.parameters(), pl_module.buffers()), strict=True))  # fmt: skip
        if not self._use_buffers or any(a.device != c.device for a, c in pairs):
            return ()
        floats = [(a, c) for a, c in pairs if a.is_floating_point()]
        return [a for a, _ in floats], [c for _, c in floats], [(a, c) for a, c in pairs if not a.is_floating_point()]

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._pairs = None
        if stage == "fit":
            self._average_model = None  # from now on the checkpoints hold the average

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # resuming: the average and the raw weights both come back
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
