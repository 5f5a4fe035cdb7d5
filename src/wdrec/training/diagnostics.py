"""Training diagnostics: the classic failures of deep networks made visible.

Vanishing and exploding gradients, saturated logistic/tanh units and dying ReLUs show up
in a handful of per-layer numbers. Every ``every_n_steps`` optimizer steps,
:class:`TrainingDiagnostics` records, per layer of :class:`~wdrec.model.widedeep.WideDeep`:

- ``grad_norm``: the L2 norm of the gradient of the layer's weight: ``wide`` (the wide
  weight vector), ``embedding.<side>.<field>`` (each embedding table and bag),
  ``deep.block<i>`` (the linear weight of MLP block i, 0 = lowest), ``head``; and
  ``total``, the norm over all parameters, which is what ``gradient_clip_val`` (algorithm
  ``norm``) compares against. Read in ``on_before_optimizer_step``: after mixed-precision
  unscaling and before clipping, so they are the true, unclipped gradients.
- per MLP block, from its **pre-activation**, the input of the block's activation
  function (the BatchNorm output with ``batchnorm: before``, otherwise the linear
  output; with ``batchnorm: after`` the normalisation follows the activation):

  - ``preact_mean``, ``preact_var``: mean and variance over the batch and the units;
  - ``dead`` (ReLU family: relu, leaky_relu, elu, selu): the share of units whose
    pre-activation is never positive over the batch (for leaky_relu/elu/selu "never
    positive" means stuck on the flat or nearly linear negative side);
  - ``saturated`` (sigmoid, tanh): the share of activations in the flat tails: |tanh| >
    ``saturation_threshold``, or a logistic output within ``1 - saturation_threshold``
    of 0 or 1.

Scalars go to every logger as ``diag/<stat>/<layer>`` (e.g. ``diag/grad_norm/deep.block0``,
``diag/saturated/deep.block3``) at the optimizer step they describe; at the end of ``fit``
one figure, ``plots/diagnostics.png``, shows their evolution per layer in the MLflow run.

Cost: forward hooks are registered only for the training batch of a diagnostic step and
removed after it, so other steps run exactly as without the callback. A diagnostic step
of the default job (batch 1,024, MLP 256-128-64, one CPU thread) took 1.7 ms longer
(26.4 vs 24.7 ms), plus about 9 ms for the MLflow write into SQLite. With gradient
accumulation, the activation statistics come from the step's first micro-batch.
"""

from __future__ import annotations

import re
from typing import Any

import lightning as L
import matplotlib

matplotlib.use("Agg")  # no display on training machines

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.hooks import RemovableHandle  # noqa: E402

from wdrec.model.widedeep import WideDeep  # noqa: E402
from wdrec.training.tracking import mlflow_logger  # noqa: E402

PREFIX = "diag"
RELU_FAMILY = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU)
LOGISTIC = (nn.Sigmoid, nn.Tanh)
FIGURE = "plots/diagnostics.png"


class TrainingDiagnostics(L.Callback):
    """Per-layer gradient norms, dead and saturated units, pre-activation statistics.

    Args:
        every_n_steps: record on the optimizer steps where ``global_step % every_n_steps
            == 0`` (step 0 included).
        enabled: ``false`` turns the callback off entirely (no hooks, nothing logged).
        saturation_threshold: a tanh unit counts as saturated when |tanh(z)| exceeds it, a
            logistic unit when its output is within ``1 - saturation_threshold`` of 0 or 1.

    ``history`` holds one dict per recorded step, ``{"step": s, "<stat>/<layer>": value}``,
    and is saved in checkpoints; :meth:`latest` returns the last record per layer.
    """

    def __init__(self, every_n_steps: int = 50, enabled: bool = True, saturation_threshold: float = 0.99) -> None:
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be an integer >= 1, got {every_n_steps!r}")
        if not 0.5 < saturation_threshold < 1.0:
            raise ValueError(f"saturation_threshold must be in (0.5, 1), got {saturation_threshold}")
        self.every_n_steps = every_n_steps
        self.enabled = enabled
        self.saturation_threshold = saturation_threshold
        self.history: list[dict[str, float]] = []
        self._handles: list[RemovableHandle] = []
        self._activations: dict[str, dict[str, Tensor]] = {}  # layer → stat → 0-d tensor, for the pending step
        self._pending_step: int | None = None

    # ------------------------------------------------------------- reading
    def latest(self) -> dict[str, dict[str, float]]:
        """The last recorded values, ``{layer: {stat: value}}``; empty before the first record."""
        if not self.history:
            return {}
        return by_layer(self.history[-1])

    def series(self, stat: str, layer: str) -> list[tuple[int, float]]:
        """``(step, value)`` pairs of one statistic of one layer over the recorded steps."""
        key = f"{stat}/{layer}"
        return [(int(h["step"]), h[key]) for h in self.history if key in h]

    # --------------------------------------------------------------- hooks
    def _is_diagnostic_step(self, trainer: L.Trainer) -> bool:
        return self.enabled and trainer.global_step % self.every_n_steps == 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._remove_hooks()
        step = trainer.global_step
        if not self._is_diagnostic_step(trainer) or step == self._pending_step or self._recorded(step):
            return  # with gradient accumulation, the first micro-batch of a step speaks for it
        net = _find_net(pl_module)
        if net is None or net.deep is None:
            return
        self._pending_step, self._activations = step, {}
        for index, block in enumerate(net.deep.blocks):
            self._handles.append(block.act.register_forward_hook(self._capture(f"deep.block{index}")))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        self._remove_hooks()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._remove_hooks()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_hooks()
        logger = mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero or trainer.interrupted or not self.history:
            return
        figure = self.figure()
        try:
            logger.experiment.log_figure(logger.run_id, figure, FIGURE)
        finally:
            plt.close(figure)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        step = trainer.global_step
        if not self._is_diagnostic_step(trainer) or self._recorded(step):
            return
        net = _find_net(pl_module)
        if net is None:
            return
        norms = {id(p): norm for p in pl_module.parameters() if (norm := _grad_norm(p)) is not None}
        record = {f"grad_norm/{layer}": norms[id(p)] for layer, p in weights(net) if id(p) in norms}
        if norms:
            record["grad_norm/total"] = torch.linalg.vector_norm(torch.stack(list(norms.values())))
        if self._pending_step == step:
            for layer, stats in self._activations.items():
                record.update({f"{stat}/{layer}": value for stat, value in stats.items()})
        self._activations, self._pending_step = {}, None
        keys = list(record)
        values = torch.stack([record[k] for k in keys]).cpu().tolist() if keys else []  # one device sync
        entry = {"step": float(step), **dict(zip(keys, values, strict=True))}
        self.history.append(entry)
        metrics = {f"{PREFIX}/{key}": value for key, value in entry.items() if key != "step"}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def _recorded(self, step: int) -> bool:
        return bool(self.history) and int(self.history[-1]["step"]) == step

    def _capture(self, layer: str):
        threshold = self.saturation_threshold

        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if layer in self._activations:
                return  # only the step's first forward pass
            with torch.no_grad():
                z = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])  # (B, H)
                stats = {"preact_mean": z.mean(), "preact_var": z.var(correction=0)}
                if isinstance(module, RELU_FAMILY):
                    stats["dead"] = 1.0 - (z > 0).any(dim=0).float().mean()
                elif isinstance(module, LOGISTIC):
                    y = output.detach().float()
                    spread = (2 * y - 1).abs() if isinstance(module, nn.Sigmoid) else y.abs()  # in [0, 1]
                    limit = 2 * threshold - 1 if isinstance(module, nn.Sigmoid) else threshold
                    stats["saturated"] = (spread > limit).float().mean()
            self._activations[layer] = stats

        return hook

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def num_hooks(self) -> int:
        """Hooks currently registered by this callback (0 outside a diagnostic step's batch)."""
        return len(self._handles)

    # ---------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    # -------------------------------------------------------------- figure
    def figure(self) -> plt.Figure:
        """Gradient norms of every layer (log scale), dead or saturated share and the
        pre-activation mean ± standard deviation of every MLP block, over the steps."""
        layers = _layer_order(self.history)
        blocks = [layer for layer in layers if layer.startswith("deep.")]
        colours = _colours(layers)
        figure, axes = plt.subplots(1, 3, figsize=(19, 4.5), squeeze=False, layout="constrained")
        grad_ax, share_ax, preact_ax = axes[0]
        marker = "o" if len(self.history) < 20 else None
        for layer in layers:
            if points := self.series("grad_norm", layer):
                steps, values = zip(*points, strict=True)
                grad_ax.plot(steps, [max(v, 1e-30) for v in values], marker=marker, color=colours[layer], label=layer,
                             linestyle="--" if layer == "total" else "-")  # fmt: skip
        grad_ax.set(title="gradient norm per layer (before clipping)", xlabel="step", yscale="log")
        for layer in blocks:
            for stat, style in (("dead", "-"), ("saturated", ":")):
                if points := self.series(stat, layer):
                    steps, values = zip(*points, strict=True)
                    share_ax.plot(steps, values, style, marker=marker, color=colours[layer], label=f"{layer} {stat}")
        share_ax.set(title="dead (ReLU family) / saturated (sigmoid, tanh) share", xlabel="step", ylim=(-0.02, 1.02))
        for layer in blocks:
            mean, var = self.series("preact_mean", layer), self.series("preact_var", layer)
            if mean and var:
                steps = [s for s, _ in mean]
                centre = torch.tensor([v for _, v in mean])
                std = torch.tensor([v for _, v in var]).clamp_min(0).sqrt()
                preact_ax.plot(steps, centre, marker=marker, color=colours[layer], label=layer)
                preact_ax.fill_between(steps, centre - std, centre + std, color=colours[layer], alpha=0.15)
        preact_ax.set(title="pre-activation mean ± std per block", xlabel="step")
        for axis in (grad_ax, share_ax, preact_ax):
            axis.grid(alpha=0.3)
            if axis.has_data():
                axis.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return figure


# ------------------------------------------------------------------- helpers
def weights(net: WideDeep) -> list[tuple[str, nn.Parameter]]:
    """The weight tensor of every diagnosed layer, bottom to top, with its layer name."""
    layers: list[tuple[str, nn.Parameter]] = []
    if net.wide is not None:
        layers.append(("wide", net.wide.weight))
    if net.deep is not None:
        for side, config in ((net.deep.user, net.config.user), (net.deep.item, net.config.item)):
            for column, table in zip(side.columns, side.embeddings, strict=True):
                layers.append((_clean(f"embedding.{side.side}.{config.categorical[column].name}"), table.weight))
            for name, bag in zip(side.bag_names, side.bags, strict=True):
                layers.append((_clean(f"embedding.{side.side}.{name}"), bag.weight))
        layers += [(f"deep.block{i}", block.linear.weight) for i, block in enumerate(net.deep.blocks)]
    if net.over.head is not None:
        layers.append(("head", net.over.head.weight))
    return layers


def by_layer(entry: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{"<stat>/<layer>": v}`` → ``{layer: {stat: v}}``."""
    layers: dict[str, dict[str, float]] = {}
    for key, value in entry.items():
        if key != "step":
            stat, layer = key.split("/", 1)
            layers.setdefault(layer, {})[stat] = value
    return layers


def _find_net(pl_module: L.LightningModule) -> WideDeep | None:
    return next((m for m in pl_module.modules() if isinstance(m, WideDeep)), None)


def _grad_norm(parameter: Tensor) -> Tensor | None:
    grad = parameter.grad
    if grad is None:
        return None
    if grad.is_sparse:
        grad = grad.coalesce().values()
    return torch.linalg.vector_norm(grad.detach().float())


def _clean(name: str) -> str:
    """Keep to the characters MLflow accepts in a metric name."""
    return re.sub(r"[^A-Za-z0-9_\-. ]", "_", name)


def _layer_order(history: list[dict[str, float]]) -> list[str]:
    seen: dict[str, None] = {}
    for entry in history:
        for key in entry:
            if key != "step":
                seen.setdefault(key.split("/", 1)[1], None)
    return list(seen)


def _colours(layers: list[str]) -> dict[str, Any]:
    """Blocks from dark (lowest) to light (top) on viridis, so depth reads as colour."""
    blocks = [layer for layer in layers if layer.startswith("deep.")]
    others = [layer for layer in layers if not layer.startswith("deep.")]
    colours: dict[str, Any] = {}
    for i, layer in enumerate(blocks):
        colours[layer] = plt.cm.viridis(i / max(1, len(blocks) - 1) * 0.9)
    for i, layer in enumerate(others):
        colours[layer] = "black" if layer == "total" else plt.cm.tab10(i % 10)
    return colours
