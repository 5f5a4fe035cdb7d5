"""The LightningModule: loss, the two optimizers and the metrics around :class:`WideDeep`.

Everything else (data, checkpoints, tracking, export) is plumbing done by the CLI and
callbacks. Metric names follow DESIGN.md: ``{stage}_loss``, ``{stage}_auc``,
``{stage}_logloss``, ``{stage}_accuracy`` (binary task), and ``{stage}_hr_10``,
``{stage}_ndcg_10``, ``{stage}_recall_10`` when the data module ranks the catalogue
(``data.ranking``: by default for implicit feedback); ``{stage}_rmse``, ``{stage}_mae`` (regression).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics import MeanMetric, MeanSquaredError, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC
from torchmetrics.regression import MeanAbsoluteError

from wdrec.data.features import SideTensors
from wdrec.model.item_side import ItemSide
from wdrec.model.widedeep import Architecture, WideDeep, WideDeepConfig
from wdrec.training.ftrl import FTRL
from wdrec.training.metrics import TopKRanking, selection_for
from wdrec.training.optim import JointOptimizer

Batch = dict[str, Tensor]
STAGES = ("val", "test")


class WideDeepModule(L.LightningModule):
    """Wide&Deep trained jointly: wide part and deep part, each with its own optimizer.

    Args:
        layout: input layout from the data module (``data.layout``, linked by the CLI).
        task: ``binary`` or ``regression`` (``data.task``, linked by the CLI).
        architecture: the network's shape (``model.architecture.hidden``, ``.dropout``, ...),
            see :class:`~wdrec.model.widedeep.Architecture`.
        wide_optimizer: optimizer for the wide part, as in the paper FTRL-Proximal
            (``wdrec.training.ftrl.FTRL``) or ``torch.optim.Adagrad``.
        deep_optimizer: optimizer for the deep part (Adam, NAdam, AdamW, RMSprop, or SGD
            with ``nesterov: true``).
        scheduler: optional learning-rate scheduler over both parts.
        wide_l1, wide_l2, deep_l1, deep_l2: penalties added to the loss, per part.
        regression_loss: ``mse``, ``mae`` or ``huber`` (regression task).
        top_k: K of the ranking metrics.
        output_bias: the network's starting output (``data.output_bias``, linked by the CLI:
            the mean training rating for regression, 0 otherwise).
        compile: compile the network with ``torch.compile`` when the trainer sets the model
            up (worth it on GPU with large batches; state dict keys are unchanged).
    """

    def __init__(
        self,
        layout: dict | None = None,
        task: Literal["binary", "regression"] = "binary",
        # An instance, not None: `--print_config` lists its settings, and `wdrec tune` can search them in
        # jobs that never mention `model:`. Read through `asdict`, never changed.
        architecture: Architecture | None = Architecture(),  # noqa: B008
        wide_optimizer: OptimizerCallable = FTRL,
        deep_optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        wide_l1: float = 0.0,
        wide_l2: float = 0.0,
        deep_l1: float = 0.0,
        deep_l2: float = 0.0,
        regression_loss: Literal["mse", "mae", "huber"] = "mse",
        top_k: int = 10,
        compile: bool = False,
        output_bias: float = 0.0,
    ) -> None:
        super().__init__()
        if layout is None:
            raise ValueError("WideDeepModule needs `layout` (the CLI links it from data.layout)")
        network = architecture or Architecture()
        # save_hyperparameters reads the arguments' local variables: the architecture as plain values,
        # so MLflow logs architecture/hidden, ... and checkpoints load with weights_only=True.
        architecture = asdict(network)  # noqa: F841
        self.save_hyperparameters(ignore=["wide_optimizer", "deep_optimizer", "scheduler"])
        self.net = WideDeep(WideDeepConfig.from_layout(layout, network, task=task, output_bias=output_bias))
        self.wide_optimizer, self.deep_optimizer, self.scheduler = wide_optimizer, deep_optimizer, scheduler
        self.penalties = {"wide": (wide_l1, wide_l2), "deep": (deep_l1, deep_l2)}
        self.regression_loss = regression_loss
        self.top_k = top_k
        self.train_loss = MeanMetric()
        if task == "binary":
            pointwise = MetricCollection({"auc": BinaryAUROC(), "logloss": MeanMetric(), "accuracy": BinaryAccuracy()})
        else:
            pointwise = MetricCollection({"rmse": MeanSquaredError(squared=False), "mae": MeanAbsoluteError()})
        self.pointwise = torch.nn.ModuleDict({stage: pointwise.clone(prefix=f"{stage}_") for stage in STAGES})
        self.losses = torch.nn.ModuleDict({stage: MeanMetric() for stage in STAGES})
        self.ranking = torch.nn.ModuleDict({stage: TopKRanking(top_k) for stage in STAGES})
        self._item_side: ItemSide | None = None  # the catalogue's half of the network, during an evaluation epoch

    def configure_model(self) -> None:
        if self.hparams.compile:
            self.net.compile()  # in place: parameter names, checkpoints and bundles stay the same

    @staticmethod
    def network_weights(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """The network's own weights in a checkpoint's ``state_dict``, where this module keeps it as ``net``."""
        return {k.removeprefix("net."): v for k, v in state_dict.items() if k.startswith("net.")}

    @property
    def model_config(self) -> dict[str, Any]:
        return asdict(self.net.config)

    def forward(self, batch: Batch) -> Tensor:
        return self.net(batch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["model_config"] = self.model_config  # rebuild with WideDeep(WideDeepConfig(**...))
        # Dropout draws from torch's global generators (the data path has its own, seeded by
        # epoch): a resumed run must continue their streams to match an uninterrupted one.
        checkpoint["torch_rng"] = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "torch_rng" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng"]["cpu"])
            if torch.cuda.is_available() and checkpoint["torch_rng"]["cuda"]:
                torch.cuda.set_rng_state_all(checkpoint["torch_rng"]["cuda"])

    # ------------------------------------------------------------------ loss
    def _loss(self, output: Tensor, label: Tensor) -> Tensor:
        output, label = output.float(), label.float()
        if self.net.config.task == "binary":
            return F.binary_cross_entropy_with_logits(output, label)
        return {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}[self.regression_loss](output, label)

    def _penalty(self) -> Tensor | float:
        total: Tensor | float = 0.0
        for part, params in (("wide", self.net.wide_parameters()), ("deep", self.net.deep_parameters())):
            l1, l2 = self.penalties[part]
            if l1 or l2:
                weights = [p for p in params if p.dim() > 1]  # weight matrices and tables, not biases
                total = total + l1 * sum(w.abs().sum() for w in weights) + l2 * sum(w.pow(2).sum() for w in weights)
        return total

    # ----------------------------------------------------------------- steps
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = self._loss(self(batch), batch["label"])
        # Per step only what a plain loop pays (benchmarks/step_overhead.py): the metric's update, not
        # its forward, which also computes a batch value; and `self.log`, which walks Lightning's result
        # collection, every `log_every_n_steps` (batch 0 included). `train_loss` is a Metric logged
        # on_epoch: Lightning computes it at the epoch's end over every update, however often logged.
        self.train_loss.update(loss.detach(), weight=len(batch["label"]))
        if batch_idx % self.trainer.log_every_n_steps == 0:
            self.log("train_loss", self.train_loss, on_step=False, on_epoch=True)
            self.log("loss", loss.detach(), prog_bar=True, logger=False)
        return loss + self._penalty()

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        output = self(batch).float()
        score = torch.sigmoid(output) if self.net.config.task == "binary" else output
        return {"user": batch["user"], "item": batch["item"], "score": score}

    def _evaluate(self, batch: Batch, stage: str) -> None:
        if "relevant" in batch:
            self._rank(batch, stage)
            return
        output, label = self(batch).float(), batch["label"]
        loss = self._loss(output, label)
        size = len(label)
        self.losses[stage](loss, weight=size)
        self.log(f"{stage}_loss", self.losses[stage], on_epoch=True, prog_bar=True, batch_size=size, add_dataloader_idx=False)
        metrics = self.pointwise[stage]
        if self.net.config.task == "binary":
            probability = torch.sigmoid(output)
            metrics[f"{stage}_auc"].update(probability, label.long())
            metrics[f"{stage}_accuracy"].update(probability, label.long())
            metrics[f"{stage}_logloss"].update(loss, weight=size)
        else:
            metrics[f"{stage}_rmse"].update(output, label)
            metrics[f"{stage}_mae"].update(output, label)
        self.log_dict(metrics, on_epoch=True, batch_size=size, add_dataloader_idx=False)

    def _rank(self, batch: Batch, stage: str) -> None:
        """A block of users against the whole catalogue: the items' half of the network computed once
        per evaluation epoch (:class:`ItemSide`), the users' half per block; the same scores as
        ``forward`` over every (user, item) pair, at a fraction of its cost. Excluded items score
        inexactly (their history masking is skipped): the metric ranks them at -inf anyway."""
        relevant, exclude = batch["relevant"], batch["exclude"]
        # Full precision: bf16 logits tie too often to rank 1,682 items faithfully.
        with torch.autocast(device_type=self.device.type, enabled=False):
            if self._item_side is None:  # once per evaluation epoch: the weights change between them
                data = self.trainer.datamodule
                self._item_side = ItemSide(data.feature_spec, self.net, data.catalogue_on(self.device))
            features = {k: v.float() if v.is_floating_point() else v for k, v in batch.items()}
            scores = self._item_side.logits(SideTensors.from_batch(features, "user"), skip=exclude).float()  # (U, N)
        self.ranking[stage].update(scores, relevant, exclude)

    def on_validation_epoch_start(self) -> None:
        self._item_side = None

    def on_test_epoch_start(self) -> None:
        self._item_side = None

    def on_validation_epoch_end(self) -> None:
        self._log_ranking("val")

    def on_test_epoch_end(self) -> None:
        self._log_ranking("test")

    def _log_ranking(self, stage: str) -> None:
        metric = self.ranking[stage]
        if self.net.config.task != "binary" or not metric.update_called:
            return  # ratings are evaluated pointwise only; a streaming data module has no ranking loader
        values = metric.compute()  # already reduced over ranks; sync_dist only keeps Lightning content
        self.log_dict({f"{stage}_{name}_{self.top_k}": value for name, value in values.items()}, sync_dist=True)
        metric.reset()

    # ------------------------------------------------------------ optimizers
    def configure_optimizers(self) -> Any:
        parts = [self.deep_optimizer(self.net.deep_parameters())] if self.net.deep is not None else []
        if self.net.wide is not None:
            parts.insert(0, self.wide_optimizer(self.net.wide_parameters()))
        optimizer = JointOptimizer(parts)
        if self.scheduler is None:
            return optimizer
        scheduler = self.scheduler(optimizer)
        monitor = selection_for(self.trainer.datamodule).metric
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": monitor}}
