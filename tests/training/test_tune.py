"""``wdrec tune`` for real: Optuna in sqlite, an MLflow sqlite store and tiny fits on MovieLens-100k."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState
from paths import CONFIGS

from wdrec.cli import main
from wdrec.job import resolved_config, run
from wdrec.model.widedeep import Architecture
from wdrec.training.tracking import HOST_TAG, PID_TAG
from wdrec.tune import STATE_TAG, STUDY_TAG, Parameter, SearchSpace, overrides

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small index ops: 2 threads on a busy 2-core machine crawl

JOB = CONFIGS / "movielens100k-ctr.yaml"
SPACE = CONFIGS / "tune" / "movielens100k-ctr.yaml"
# Two epochs of two batches: a validation value per epoch for the pruner, in seconds per trial.
TINY = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
        "--diagnostics.enabled=false"]  # fmt: skip


def test_the_shipped_space_reads_as_command_line_overrides() -> None:
    space = SearchSpace.load(SPACE)
    by_key = {parameter.key: parameter for parameter in space.parameters}
    assert by_key["model.deep_optimizer.init_args.lr"].log
    assert by_key["model.architecture.dropout"].step == 0.05
    study = optuna.create_study()
    values = space.suggest(study.ask())
    assert set(values) == set(by_key)
    hidden = overrides({"model.architecture.hidden": values["model.architecture.hidden"]})[0]
    assert json.loads(hidden.removeprefix("--model.architecture.hidden=")) in [list(c) for c in by_key["model.architecture.hidden"].choices]
    assert overrides({"model.architecture.dropout": 0.1 + 0.2, "model.architecture.activation": "relu"}) == ["--model.architecture.dropout=0.3", "--model.architecture.activation=relu"]


@pytest.mark.parametrize("job", ["movielens100k", "movielens100k-ctr", "movielens100k-rating"])
def test_each_shipped_space_names_only_settings_of_its_job(job: str) -> None:
    config = str(CONFIGS / f"{job}.yaml")
    SearchSpace.load(CONFIGS / "tune" / f"{job}.yaml").check(yaml.safe_load(resolved_config(["--config", config])), [config])


def test_a_job_that_leaves_the_architecture_alone_can_search_it() -> None:
    """Users' own jobs often say nothing about ``model:``: the architecture's defaults are its settings."""
    features = str(CONFIGS / "features" / "movielens100k.yaml")
    job = yaml.safe_load(resolved_config(["--config", features]))
    assert job["model"]["architecture"]["dropout"] == Architecture().dropout
    SearchSpace.load(CONFIGS / "tune" / "movielens100k-ctr.yaml").check(job, [features])


@pytest.mark.parametrize(
    ("space", "message"),
    [("model.architecture.dropout: {type: float, low: 0.0, high: 0.5}", "expected one key, parameters"),
     ("parameters: {model.architecture.dropout: {type: uniform, low: 0.0, high: 0.5}}", "model.architecture.dropout: expected {type: float|int|categorical"),
     ("parameters: {model.architecture.dropout: {type: float, low: 0.5, high: 0.1}}", "model.architecture.dropout: type float needs numbers low < high"),
     ("parameters: {model.architecture.dropout: {type: float, low: 0.0, hi: 0.5}}", "model.architecture.dropout: unknown field hi for type float"),
     ("parameters: {model.deep_optimizer.init_args.lr: {type: float, low: 0, high: 0.1, log: true}}",
      "model.deep_optimizer.init_args.lr: log needs low > 0"),
     ("parameters: {data.batch_size: {type: categorical, choices: []}}", "data.batch_size: type categorical needs choices"),
     ("parameters: {data.batch_size: {type: int, low: 64, high: 1024, step: 0.5}}", "data.batch_size: step is a positive int"),
     ("parameters: {--model.architecture.dropout: {type: float, low: 0.0, high: 0.5}}", "--model.architecture.dropout: a parameter is a command-line key"),
     ("parameters: {model.dropot: {type: float, low: 0.0, high: 0.5}}", "model.dropot: not a setting of the job")],
)  # fmt: skip
def test_a_bad_space_file_ends_in_one_line_naming_file_and_key(
    space: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(space)
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--config", str(JOB), "--space", str(path), "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"wdrec: search space {path}: ") and message in error, error


def test_a_study_resumed_with_other_choices_is_refused_before_any_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Optuna cannot go on with a categorical whose choices changed; a moved float range it can."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=storage, study_name="ctr", direction="maximize")
    earlier = {"data.batch_size": optuna.distributions.CategoricalDistribution([256, 512])}
    study.add_trial(optuna.trial.create_trial(params={"data.batch_size": 512}, distributions=earlier, value=0.8))
    path = tmp_path / "space.yaml"
    path.write_text("parameters: {data.batch_size: {type: categorical, choices: [512, 1024]}}")
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--config", str(JOB), "--space", str(path), "--storage", storage, "--study-name", "ctr", "--n-trials", "2"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (f"wdrec: search space {path}: data.batch_size: study 'ctr' in {storage} searched it as categorical, "
                     "choices [256, 512], this space as categorical, choices [512, 1024]; give another --study-name for the new space")  # fmt: skip
    assert len(optuna.load_study(study_name="ctr", storage=storage).trials) == 1  # nothing started

    earlier = {"model.architecture.dropout": optuna.distributions.FloatDistribution(0.0, 0.5, step=0.05)}
    moved = SearchSpace(path, (Parameter("model.architecture.dropout", "float", low=0.0, high=0.6, step=0.05),))
    study.add_trial(optuna.trial.create_trial(params={"model.architecture.dropout": 0.1}, distributions=earlier, value=0.8))
    moved.check_study(study, storage)


def test_a_study_tracks_its_trials_writes_a_config_that_trains_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = os.environ["MLFLOW_TRACKING_URI"]  # the suite's store (conftest): a new one costs seconds of migrations
    storage, output = f"sqlite:///{tmp_path / 'optuna.db'}", tmp_path / "best.yaml"
    command = ["tune", "--config", str(JOB), "--space", str(SPACE), "--storage", storage, "--study-name", "ctr",
               "--output", str(output), "--seed", "0", *TINY]  # fmt: skip

    main([*command, "--n-trials", "2"])

    study = optuna.load_study(study_name="ctr", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("wdrec").experiment_id

    def parents() -> list:
        tagged = client.search_runs([experiment], filter_string=f"tags.`{STUDY_TAG}` = 'ctr'")
        return [r for r in tagged if "mlflow.parentRunId" not in r.data.tags]

    (parent,) = parents()
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_auc"] == pytest.approx(study.best_value)
    assert parent.data.tags["wdrec.tune.best_trial"] == str(study.best_trial.number)
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/param_importances.png", "plots/intermediate_values.png"} <= plots
    assert "best_config.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    def children() -> list:
        return client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")

    assert sorted((r.info.status, r.data.tags[STATE_TAG]) for r in children()) == [("FINISHED", "COMPLETE")] * 2
    assert all(0.0 < r.data.metrics["val_auc"] < 1.0 for r in children())

    # The best trial's whole job, ready for `wdrec fit --config`.
    config = yaml.safe_load(output.read_text())
    assert config["model"]["architecture"]["dropout"] == pytest.approx(study.best_params["model.architecture.dropout"])
    assert config["data"]["init_args"]["batch_size"] == study.best_params["data.batch_size"]
    assert config["model"]["architecture"]["hidden"] == json.loads(study.best_params["model.architecture.hidden"])
    fit = run(["fit", "--config", str(output), "--registry.enabled=false", "--trainer.enable_progress_bar=false"])
    assert fit.trainer.state.finished and fit.trainer.checkpoint_callback.monitor == "val_auc"
    assert math.isfinite(float(fit.trainer.callback_metrics["val_auc"]))

    # A process killed mid-trial left one RUNNING: the resumed study fails it, queues it again, and
    # runs on until it has 3 finished trials, under the same parent run.
    killed = study.ask()
    gone = subprocess.Popen(["true"])
    gone.wait()
    killed.set_user_attr(HOST_TAG, socket.gethostname())
    killed.set_user_attr(PID_TAG, str(gone.pid))

    main([*command, "--n-trials", "3"])

    states = [t.state for t in optuna.load_study(study_name="ctr", storage=storage).trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert len(children()) == 3
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert len(parents()) == 1


def test_a_pruned_trial_stops_and_its_run_ends_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Optuna's Lightning callback stops the fit at the first validation the pruner rejects; its
    child run says so (KILLED, state PRUNED) rather than FAILED, and a study with no completed
    trial writes no config."""
    monkeypatch.chdir(tmp_path)
    uri = os.environ["MLFLOW_TRACKING_URI"]  # the suite's store (conftest): a new one costs seconds of migrations
    # Every AUC is below 1.1, so the first epoch's report is pruned (the median rule needs 5 trials first).
    monkeypatch.setattr(optuna.pruners, "MedianPruner", lambda **_: optuna.pruners.ThresholdPruner(lower=1.1))
    storage, output = f"sqlite:///{tmp_path / 'optuna.db'}", tmp_path / "best.yaml"
    main(["tune", "--config", str(JOB), "--space", str(SPACE), "--storage", storage, "--study-name", "pruned",
          "--output", str(output), "--n-trials", "1", *TINY])  # fmt: skip

    (trial,) = optuna.load_study(study_name="pruned", storage=storage).trials
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [0]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("wdrec").experiment_id], filter_string=f"tags.`{STUDY_TAG}` = 'pruned'")
    (child,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert (child.info.status, child.data.tags[STATE_TAG], child.data.metrics["epoch"]) == ("KILLED", "PRUNED", 0)
    assert not output.exists()
