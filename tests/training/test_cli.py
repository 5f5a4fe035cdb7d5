"""``wdrec fit|validate|test|predict`` through the Lightning CLI, for real, on MovieLens-100k."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import yaml
from commands import main_in_process
from lightning.pytorch import Callback
from paths import CONFIGS, DEFAULT_CONFIG

from wdrec.data.batches import ResidentBatches
from wdrec.job import resolved_config, run

FAST_DEV_RUN = CONFIGS / "debug" / "fdr.yaml"
# Short and cheap: rank only 100 users per evaluation.
SMALL = ["--data.ranking_max_users=100", "--trainer.enable_progress_bar=false"]


def test_print_config_shows_the_resolved_job(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "--config", str(DEFAULT_CONFIG), "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["data"]["class_path"] == "wdrec.data.datamodule.InteractionDataModule"
    assert config["data"]["init_args"]["source"]["class_path"] == "wdrec.data.sources.movielens.MovieLens"
    assert config["model"]["wide_optimizer"]["class_path"] == "wdrec.training.ftrl.FTRL"


def test_a_composed_job_is_its_parts_given_in_order() -> None:
    """A job file's ``compose:`` list reads as one ``--config`` per part: the default job is the
    MovieLens feature list, the history overlay (``features+:``) and the L1O settings."""
    parts = [CONFIGS / "features" / "movielens100k.yaml", CONFIGS / "features" / "history.yaml",
             CONFIGS / "selection" / "movielens100k-l1o.yaml"]  # fmt: skip
    spelled_out = resolved_config([arg for part in parts for arg in ("--config", str(part))])
    assert resolved_config(["--config", str(DEFAULT_CONFIG)]) == spelled_out
    data = yaml.safe_load(spelled_out)["data"]["init_args"]
    names = [feature["name"] for feature in data["features"]]
    assert names[-2:] == ["history", "recent"] and names.count("user_id") == 1  # appended, not replaced
    assert [cross["fields"] for cross in data["crosses"]][-2:] == [["history", "item_id"], ["recent", "item_id"]]


@pytest.mark.parametrize(
    ("compose", "problem"),
    [("[features/missing.yaml]", "names features/missing.yaml, but"), ("[job.yaml]", "composes"),
     ("features/movielens100k.yaml", "must be a list of config files")],
)  # fmt: skip
def test_a_job_that_cannot_be_composed_is_refused_in_one_line(compose: str, problem: str, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "movielens100k.yaml").write_text((CONFIGS / "features" / "movielens100k.yaml").read_text())
    job.write_text(f"compose: {compose}\n")
    code, _, err = main_in_process(["fit", "--config", str(job)], {}, tmp_path)
    assert code == 2
    assert err.startswith(f"wdrec: {job}: `compose`") and problem in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("config", "metric", "mode"),
    [("movielens100k.yaml", "val_ndcg_10", "max"), ("movielens100k-ctr.yaml", "val_auc", "max"),
     ("movielens100k-rating.yaml", "val_rmse", "min")],
)  # fmt: skip
def test_the_task_decides_what_checkpointing_and_early_stopping_monitor(config: str, metric: str, mode: str) -> None:
    """One selection metric per task, so the best epoch, early stopping, the scheduler and the
    registry's champion never disagree (the registry and scheduler derive it the same way)."""
    trainer = run(["--config", str(CONFIGS / config)], subcommand=False).trainer
    assert (trainer.checkpoint_callback.monitor, trainer.checkpoint_callback.mode) == (metric, mode)
    stopping = trainer.early_stopping_callback
    assert (stopping.monitor, stopping.mode) == (metric, mode)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_one_batch_fits_in_every_precision(precision: str, tmp_path: Path) -> None:
    with contextlib.chdir(tmp_path):
        cli = run(["fit", "--config", str(DEFAULT_CONFIG), "--config", str(FAST_DEV_RUN),
                   f"--trainer.precision={precision}", *SMALL])  # fmt: skip
    assert cli.trainer.state.finished
    assert torch.isfinite(cli.trainer.callback_metrics["train_loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine; the GPU path runs on GPU hosts")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("compile_net", [False, True])
def test_one_batch_fits_on_cuda(tmp_path: Path, precision: str, compile_net: bool) -> None:
    # Only the CUDA path: tracking and registration have tests of their own (and a GPU host may lack MLflow).
    with contextlib.chdir(tmp_path):
        cli = run(["fit", "--config", str(DEFAULT_CONFIG), "--config", str(FAST_DEV_RUN), "--trainer.accelerator=gpu",
                   "--trainer.devices=1", f"--trainer.precision={precision}", f"--model.compile={compile_net}",
                   "--trainer.logger=false", "--registry.enabled=false", *SMALL])  # fmt: skip
    assert cli.trainer.state.finished
    assert cli.trainer.strategy.root_device.type == "cuda"  # (Lightning moves the model back to the CPU at the end)
    assert torch.isfinite(cli.trainer.callback_metrics["val_loss"])


class StepLosses(Callback):
    """Each training step's loss and batch shape."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.shapes: set[tuple[int, ...]] = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.losses.append(float(outputs["loss"]))
        self.shapes.add(tuple(batch["label"].shape))


def test_a_resident_fit_on_the_cpu_trains_on_batches_of_one_shape(tmp_path: Path) -> None:
    """``--data.resident=true`` forces the device-resident path where the trainer is a CPU's."""
    steps = StepLosses()
    with contextlib.chdir(tmp_path):
        cli = run(["fit", "--config", str(DEFAULT_CONFIG), "--data.resident=true", "--trainer.max_epochs=1",
                   "--trainer.limit_train_batches=60", "--trainer.limit_val_batches=0", "--trainer.logger=false",
                   "--registry.enabled=false", "--early_stopping.check_on_train_epoch_end=false", *SMALL],
                  callbacks=[steps])  # fmt: skip
    assert isinstance(cli.trainer.train_dataloader, ResidentBatches)
    rows_per_positive = 1 + cli.datamodule.negatives  # a positive and its negatives
    positives = cli.datamodule.batch_size // rows_per_positive
    assert len(steps.losses) == 60 and steps.shapes == {(rows_per_positive * positives,)}
    assert sum(steps.losses[-10:]) < 0.9 * sum(steps.losses[:10])


@pytest.mark.parametrize(
    ("config", "metrics"),
    [(DEFAULT_CONFIG, ("val_loss", "val_auc", "val_ndcg_10")),
     # the PW job averages its weights: the raw ones (training goes on from them) and the average both come back
     (CONFIGS / "movielens100k-ctr.yaml", ("val_loss", "val_auc"))],
    ids=["default", "pw-averaged-weights"],
)  # fmt: skip
def test_resuming_from_last_checkpoint_matches_an_uninterrupted_run(config: Path, metrics: tuple[str, ...], tmp_path: Path) -> None:
    common = ["--config", str(config), "--trainer.limit_train_batches=8", "--trainer.limit_val_batches=2",
              "--registry.enabled=false", *SMALL]  # fmt: skip
    with contextlib.chdir(tmp_path / "."):
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
    with contextlib.chdir(tmp_path / "a"):
        straight = run(["fit", *common, "--trainer.max_epochs=2"])
    with contextlib.chdir(tmp_path / "b"):
        run(["fit", *common, "--trainer.max_epochs=1"])
        resumed = run(["fit", *common, "--trainer.max_epochs=2", "--ckpt_path=last"])
    assert resumed.trainer.current_epoch == straight.trainer.current_epoch == 2
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=lambda m, n=name: f"{n}: {m}")
    for key in metrics:
        assert float(straight.trainer.callback_metrics[key]) == pytest.approx(float(resumed.trainer.callback_metrics[key]), abs=1e-6)


def test_validate_and_test_subcommands_report_the_contract_metrics(trained_run, tmp_path: Path) -> None:
    checkpoint = trained_run.checkpoint_dir / "last.ckpt"
    with contextlib.chdir(tmp_path):
        cli = run(["test", "--config", str(DEFAULT_CONFIG), f"--ckpt_path={checkpoint}", *SMALL])
    metrics = cli.trainer.callback_metrics
    for name in ("test_loss", "test_auc", "test_logloss", "test_hr_10", "test_ndcg_10", "test_recall_10"):
        assert name in metrics and torch.isfinite(metrics[name]), name
