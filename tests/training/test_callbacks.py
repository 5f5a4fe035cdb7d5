"""Weight averaging (``AveragedWeights``): what validation chose is what the checkpoint holds,
and what any later stage evaluates."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
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

