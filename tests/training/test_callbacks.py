"""Weight averaging (``AveragedWeights``): what validation chose is what the checkpoint holds,
and what any later stage evaluates."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from paths import CONFIGS

from wdrec.job import run
from wdrec.training.callbacks import AveragedWeights

PW_JOB = CONFIGS / "movielens100k-ctr.yaml"  # ships with AveragedWeights


def test_the_checkpoint_holds_the_average_that_validation_scored_and_later_stages_evaluate_it(tmp_path: Path) -> None:
    with contextlib.chdir(tmp_path):
        cli = run(["fit", "--config", str(PW_JOB), "--trainer.max_epochs=2", "--trainer.limit_train_batches=30",
                   "--trainer.logger=false", "--registry.enabled=false", "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert any(isinstance(c, AveragedWeights) for c in cli.trainer.callbacks)
    selection = cli.trainer.checkpoint_callback
    checkpoint = torch.load(selection.best_model_path, map_location="cpu", weights_only=True)
    average, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert not all(torch.equal(average[name], raw[name]) for name in average)  # an average, not the last step

    # In the same process, as benchmarks/quality.py tests: the checkpoint's average is the model.
    validated = cli.trainer.validate(cli.model, cli.datamodule, ckpt_path="best", verbose=False)[0]
    assert validated[selection.monitor] == pytest.approx(float(selection.best_model_score), abs=1e-6)
    cli.trainer.test(cli.model, cli.datamodule, ckpt_path="best", verbose=False)
    for name, value in cli.model.state_dict().items():
        torch.testing.assert_close(value, average[name], msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("options", [[], ["--trainer.callbacks.init_args.use_buffers=false"]], ids=["default", "buffers-not-averaged"])
def test_the_in_place_step_update_gives_lightnings_average_bit_for_bit(
    options: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fit(name: str) -> dict[str, torch.Tensor]:
        with contextlib.chdir(tmp_path):
            cli = run(["fit", "--config", str(PW_JOB), "--trainer.max_epochs=1", "--trainer.limit_train_batches=40",
                       "--trainer.limit_val_batches=2", "--trainer.logger=false", "--registry.enabled=false",
                       "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={name}", *options])  # fmt: skip
        return cli.model.state_dict()  # the average, copied in as the fit ends

    ours = fit("ours")
    monkeypatch.setattr(AveragedWeights, "on_train_batch_end", EMAWeightAveraging.on_train_batch_end)
    lightnings = fit("lightning")
    assert ours.keys() == lightnings.keys()
    assert [name for name in ours if not torch.equal(ours[name], lightnings[name])] == []
