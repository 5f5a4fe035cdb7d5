"""Training diagnostics catch planted failures, on real MovieLens-100k batches.

Every number asserted here is read from the callback (``history`` / ``latest``), so a
disabled or broken callback records nothing and these tests fail.

Measured on this network (4 hidden layers of 256, no BatchNorm, batches of 256, mean over
five steps): with N(0, 1) weights and logistic units 63-69% of the activations of
blocks 1-3 sit in the flat tails (4% in block 0, whose inputs are the small embeddings),
against 0% with the Glorot initialisation. Vanishing gradients, on the other hand, come
from the logistic's slope, at most 1/4: with Glorot weights each block's gradient is
0.25x the one above (block 0 / block 3: 0.002), while the same network with tanh, whose
slope at 0 is 1, keeps them level (about 1x). The N(0, 1) weights (gain sqrt(256) = 16)
make up for the small slope, so that network's ratio is 0.22.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import pytest
import torch
from mlflow import MlflowClient
from paths import DEFAULT_CONFIG

from wdrec.data.datamodule import InteractionDataModule
from wdrec.data.features import Field
from wdrec.data.sources.movielens import MovieLens
from wdrec.model.widedeep import Architecture
from wdrec.training.diagnostics import TrainingDiagnostics
from wdrec.training.module import WideDeepModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEPTH = 4
HIDDEN = [256] * DEPTH
BLOCKS = [f"deep.block{i}" for i in range(DEPTH)]


@pytest.fixture(scope="module")
def datamodule(data_dir: Path) -> InteractionDataModule:
    fields = [Field("user_id", "user"), Field("gender", "user"), Field("occupation", "user"), Field("item_id", "item"),
              Field("genres", "item", kind="multi_hot")]  # fmt: skip
    module = InteractionDataModule(MovieLens("100k"), fields, batch_size=256, data_dir=str(data_dir))
    module.prepare_data()
    module.setup("fit")
    return module


def build(datamodule: InteractionDataModule, **model: object) -> WideDeepModule:
    L.seed_everything(0, verbose=False)
    architecture = Architecture(**({"hidden": HIDDEN, "dropout": 0.0, "batchnorm": "none"} | model))
    return WideDeepModule(layout=datamodule.layout, task=datamodule.task, architecture=architecture)


def fit(module: L.LightningModule, datamodule: L.LightningDataModule, *callbacks: L.Callback, steps: int = 5,
        **trainer: object) -> L.Trainer:  # fmt: skip
    fitter = L.Trainer(max_steps=steps, logger=False, limit_val_batches=0, enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                       callbacks=list(callbacks), **trainer)  # fmt: skip
    fitter.fit(module, datamodule=datamodule)
    return fitter


def diagnose(datamodule: InteractionDataModule, steps: int = 5, **model: object) -> TrainingDiagnostics:
    diagnostics = TrainingDiagnostics(every_n_steps=1)
    fit(build(datamodule, **model), datamodule, diagnostics, steps=steps)
    return diagnostics


def mean(diagnostics: TrainingDiagnostics, stat: str, layer: str) -> float:
    """The statistic averaged over the recorded steps; fails when nothing was recorded."""
    points = diagnostics.series(stat, layer)
    assert points, f"the callback recorded no {stat} for {layer}"
    return sum(value for _, value in points) / len(points)


# ------------------------------------------------------------------ planted problems
def test_standard_normal_init_saturates_logistic_units_and_matched_init_does_not(datamodule) -> None:
    planted = diagnose(datamodule, activation="sigmoid", init="standard_normal")
    matched = diagnose(datamodule, activation="sigmoid", init="auto")  # Glorot
    for layer in BLOCKS[1:]:  # block 0 sees the embeddings (norm ~1 per field): 4% saturated
        assert mean(planted, "saturated", layer) > 0.5, layer
        assert mean(planted, "preact_var", layer) > 50  # N(0, 1) weights over 256 inputs in (0, 1)
    for layer in BLOCKS:
        assert mean(matched, "saturated", layer) < 0.05, layer
        assert mean(matched, "preact_var", layer) < 1
        assert "dead" not in planted.latest()[layer]  # a ReLU-family measure


def test_logistic_units_vanish_gradients_toward_lower_layers_and_tanh_does_not(datamodule) -> None:
    logistic = diagnose(datamodule, activation="sigmoid", init="auto")
    tanh = diagnose(datamodule, activation="tanh", init="auto")
    grads = [mean(logistic, "grad_norm", layer) for layer in BLOCKS]
    assert grads[0] < 0.02 * grads[-1], grads  # measured 0.002
    for lower, upper in zip(grads[1:-1], grads[2:], strict=True):
        assert lower < 0.4 * upper, grads  # the logistic's slope at 0 is 1/4: measured 0.25 per layer
    assert mean(logistic, "grad_norm", "embedding.user.user_id") < 0.01 * mean(logistic, "grad_norm", "head")
    level = [mean(tanh, "grad_norm", layer) for layer in BLOCKS]
    assert 0.3 < level[0] / level[-1] < 3, level  # measured ~1


def test_dead_relu_layer_is_reported_and_freezes_the_deep_part(datamodule) -> None:
    healthy = diagnose(datamodule, activation="relu", batchnorm="before")
    module = build(datamodule, activation="relu", batchnorm="before")
    with torch.no_grad():
        module.net.deep.blocks[1].norm.bias.fill_(-100.0)  # BatchNorm's shift: every pre-activation ~ -100
    planted = TrainingDiagnostics(every_n_steps=1)
    fit(module, datamodule, planted)
    for layer in BLOCKS:
        assert mean(healthy, "dead", layer) < 0.1, layer  # measured <= 0.04
    assert mean(planted, "dead", "deep.block1") == 1.0
    assert mean(planted, "dead", "deep.block0") < 0.1  # below the planted layer: alive
    # Nothing flows back through a dead layer, and the layers above it see only zeros:
    # no weight of the deep part gets a gradient; the wide part still learns.
    for layer in [*BLOCKS, "embedding.user.user_id", "embedding.item.genres", "head"]:
        assert mean(planted, "grad_norm", layer) == 0.0, layer
    assert mean(planted, "grad_norm", "wide") > 0.0


def test_pre_activation_is_the_batchnorm_output_when_it_comes_first(datamodule) -> None:
    diagnostics = diagnose(datamodule, steps=1, activation="relu", batchnorm="before")
    for layer in BLOCKS:  # training-mode BatchNorm at step 0: mean 0, variance 1 per unit
        stats = diagnostics.latest()[layer]
        assert abs(stats["preact_mean"]) < 1e-4 and stats["preact_var"] == pytest.approx(1.0, abs=1e-3), layer
    after = diagnose(datamodule, steps=1, activation="relu", batchnorm="after")
    assert after.latest()["deep.block0"]["preact_var"] != pytest.approx(1.0, abs=0.05)  # the linear output


# ------------------------------------------------------------------------------ cost
class HookProbe(L.Callback):
    """Counts the forward hooks on the activations while each training batch runs."""

    def __init__(self) -> None:
        self.hooks: list[int] = []

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self.hooks.append(sum(len(block.act._forward_hooks) for block in pl_module.net.deep.blocks))


def test_hooks_live_only_for_the_batches_of_diagnostic_steps(datamodule) -> None:
    diagnostics, probe = TrainingDiagnostics(every_n_steps=3), HookProbe()
    module = build(datamodule, hidden=[64, 32])
    fit(module, datamodule, diagnostics, probe, steps=7)
    assert probe.hooks == [2, 0, 0, 2, 0, 0, 2]
    assert [int(entry["step"]) for entry in diagnostics.history] == [0, 3, 6]
    assert diagnostics.num_hooks == 0
    assert all(not block.act._forward_hooks for block in module.net.deep.blocks)
    assert set(diagnostics.latest()) == {"wide", "embedding.user.user_id", "embedding.user.gender",
                                         "embedding.user.occupation", "embedding.item.item_id",
                                         "embedding.item.genres", "deep.block0", "deep.block1", "head", "total"}  # fmt: skip


def test_disabled_callback_records_nothing_and_adds_no_hooks(datamodule) -> None:
    diagnostics, probe = TrainingDiagnostics(every_n_steps=1, enabled=False), HookProbe()
    fit(build(datamodule, hidden=[64, 32]), datamodule, diagnostics, probe, steps=3)
    assert probe.hooks == [0, 0, 0]
    assert diagnostics.history == [] and diagnostics.latest() == {}


def test_history_survives_a_checkpoint_round_trip(datamodule) -> None:
    diagnostics = diagnose(datamodule, steps=2, hidden=[64, 32])
    restored = TrainingDiagnostics()
    restored.load_state_dict(diagnostics.state_dict())
    assert restored.history == diagnostics.history and len(restored.history) == 2
    assert restored.latest() == diagnostics.latest()


@pytest.mark.parametrize("kwargs", [{"every_n_steps": 0}, {"every_n_steps": 2.5}, {"saturation_threshold": 1.0}])
def test_bad_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TrainingDiagnostics(**kwargs)


def test_figure_draws_every_layer(datamodule) -> None:
    diagnostics = diagnose(datamodule, steps=3, hidden=[64, 32], activation="tanh")
    figure = diagnostics.figure()
    try:
        gradients, shares, preacts = figure.axes[:3]
        assert {line.get_label() for line in gradients.get_lines()} == set(diagnostics.latest())
        assert {line.get_label() for line in shares.get_lines()} == {"deep.block0 saturated", "deep.block1 saturated"}
        assert {line.get_label() for line in preacts.get_lines()} == {"deep.block0", "deep.block1"}
        assert gradients.get_yscale() == "log"
    finally:
        plt.close(figure)


# --------------------------------------------------------------------------- clipping
class GradNorm(L.Callback):
    """Gradient norms the optimizer saw (after any clipping; zeroed only in the next step)."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.layers: dict[str, float] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        grads = [p.grad.detach().float().norm() for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack(grads))))
        net = pl_module.net
        self.layers = {"wide": net.wide.weight, "embedding.user.user_id": net.deep.user.embeddings[0].weight,
                       "embedding.item.genres": net.deep.item.bags[0].weight, "head": net.over.head.weight,
                       **{f"deep.block{i}": b.linear.weight for i, b in enumerate(net.deep.blocks)}}  # fmt: skip
        self.layers = {name: float(weight.grad.norm()) for name, weight in self.layers.items()}


def test_gradient_norms_are_those_of_each_layers_weight(datamodule) -> None:
    diagnostics, seen = TrainingDiagnostics(every_n_steps=1), GradNorm()
    fit(build(datamodule, hidden=[64, 32]), datamodule, diagnostics, seen, steps=1)
    recorded = diagnostics.latest()
    assert set(seen.layers) < set(recorded)
    for layer, norm in seen.layers.items():
        assert recorded[layer]["grad_norm"] == pytest.approx(norm, rel=1e-5), layer
    assert recorded["total"]["grad_norm"] == pytest.approx(seen.norms[0], rel=1e-5)


def test_gradient_clipping_by_norm_works_through_the_joint_optimizer(datamodule) -> None:
    diagnostics, seen = TrainingDiagnostics(every_n_steps=1), GradNorm()
    module = build(datamodule, hidden=[64, 32])
    fit(module, datamodule, diagnostics, seen, steps=1, gradient_clip_val=0.01, gradient_clip_algorithm="norm")
    before = diagnostics.latest()["total"]["grad_norm"]
    assert before > 0.1  # recorded before clipping
    assert seen.norms[0] == pytest.approx(0.01, rel=1e-3)


# ----------------------------------------------------------------------- CLI, MLflow
def test_cli_exposes_the_diagnostics_settings(tmp_path: Path) -> None:
    from wdrec.job import run

    with contextlib.chdir(tmp_path):
        cli = run(["--config", str(DEFAULT_CONFIG), "--diagnostics.every_n_steps=20", "--diagnostics.enabled=false",
                   "--trainer.logger=false"], subcommand=False)  # fmt: skip
    (diagnostics,) = [c for c in cli.trainer.callbacks if isinstance(c, TrainingDiagnostics)]
    assert diagnostics.every_n_steps == 20 and diagnostics.enabled is False


def test_default_job_logs_diagnostics_to_mlflow(trained_run) -> None:
    client = MlflowClient(trained_run.tracking_uri)
    run = client.get_run(trained_run.run_id)
    assert "plots/diagnostics.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    metrics = run.data.metrics
    for layer in ("wide", "embedding.user.user_id", "embedding.item.genres", "deep.block0", "deep.block2", "head", "total"):
        assert f"diag/grad_norm/{layer}" in metrics, layer
    for stat in ("dead", "preact_mean", "preact_var"):  # ReLU blocks in the default job
        assert {f"diag/{stat}/deep.block{i}" for i in range(3)} <= set(metrics), stat
    assert 0.0 <= metrics["diag/dead/deep.block0"] <= 1.0
    history = client.get_metric_history(run.info.run_id, "diag/grad_norm/deep.block0")
    assert [m.step for m in history] == [0]  # every 50 steps; the short fit takes 30

