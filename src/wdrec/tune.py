"""``wdrec tune``: hyperparameter search with Optuna, each trial a real ``wdrec fit``.

It lives beside ``cli.py``, not in ``training/``: a trial runs the whole job through the
composition root (:func:`wdrec.job.run`), which imports ``export``.

- The search space is a YAML file of command-line keys (``model.architecture.dropout``) with a type and a
  range (:class:`SearchSpace`). A trial is ``wdrec fit`` with the job's configs, the command
  line's overrides and then the trial's values; it registers nothing and keeps its
  checkpoints in a temporary directory. The best trial's job is written out as a config.
- TPE samples; the median rule prunes, fed by Optuna's Lightning callback after each
  validation. The objective is the best epoch's value of the task's selection metric
  (:func:`~wdrec.training.metrics.selection_for`, the one ``wdrec fit`` checkpoints on),
  and the study's direction is its mode.
- The study lives in an RDB (``--storage``, default ``sqlite:///optuna.db``). Processes on
  several machines given the same storage and study name share it (Optuna's own distributed
  mode), and running the command again resumes it: ``--n-trials`` counts the study's finished
  trials, not this process's.
- MLflow: one parent run per study, and each trial a child run (tag ``mlflow.parentRunId``).
  The parent gets the best value and parameters, the study's plots and the best config.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import socket
import tempfile
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import matplotlib.pyplot as plt
import optuna
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from optuna_integration import PyTorchLightningPruningCallback
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

import wdrec
from wdrec.job import ConfigError, resolved_config, run
from wdrec.tracking_store import resolve_tracking_uri
from wdrec.training.metrics import Selection, selection_for
from wdrec.training.tracking import (
    HOST_TAG,
    PID_TAG,
    START_TAG,
    check_tracking_uri,
    process_alive,
    process_tags,
)

DEFAULT_STORAGE = "sqlite:///optuna.db"
TRACKED_LOGGER = "wdrec.training.tracking.MLflowTracking"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A killed machine's trial is failed (and queued again, once) when it has not beaten for GRACE_S.
HEARTBEAT_S, GRACE_S = 30, 120
PARENT_ATTR, METRIC_ATTR = "wdrec.mlflow_parent_run", "wdrec.selection_metric"  # study user attributes
STUDY_TAG, TRIAL_TAG, STATE_TAG = "wdrec.tune.study", "wdrec.tune.trial", "wdrec.tune.state"
# One line per trial replaces Lightning's bar and summary; a config or an override may turn them back on.
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
KEY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")  # seed_everything, model.architecture.dropout, ...
FIELDS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}, "categorical": {"choices"}}


class TuneError(ConfigError):
    """A search space, storage or study that ``wdrec tune`` cannot use (reported in one line)."""


@dataclass(frozen=True)
class Parameter:
    """One searched command-line key. ``float`` and ``int``: from ``low`` to ``high`` (both
    included), log-uniform with ``log``, on a grid with ``step``; ``categorical``: one of
    ``choices``, which may be lists (``model.architecture.hidden``; Optuna sees them as their JSON text)."""

    key: str  # as on the command line without dashes: model.architecture.dropout, model.deep_optimizer.init_args.lr
    type: Literal["float", "int", "categorical"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """What Optuna records for this parameter in each trial."""
        if self.type == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return optuna.distributions.CategoricalDistribution([_label(choice) for choice in self.choices])

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.key, [_label(choice) for choice in self.choices])


@dataclass(frozen=True)
class SearchSpace:
    """The parameters of a search space file::

        parameters:
          model.architecture.dropout: {type: float, low: 0.0, high: 0.5}
          model.deep_optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
          data.batch_size: {type: categorical, choices: [256, 512, 1024]}
    """

    path: Path
    parameters: tuple[Parameter, ...]

    @classmethod
    def load(cls, path: Path) -> SearchSpace:
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise TuneError(f"search space {path}: cannot read it: {error}") from None
        entries = document.get("parameters") if isinstance(document, dict) else None
        if not isinstance(entries, dict) or not entries or set(document) != {"parameters"}:
            raise TuneError(f"search space {path}: expected one key, parameters, mapping command-line keys to "
                            f"{{type: float|int|categorical, ...}}; got {_short(document)}")  # fmt: skip
        return cls(path, tuple(_parameter(path, key, spec) for key, spec in entries.items()))

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {parameter.key: parameter.suggest(trial) for parameter in self.parameters}

    def check_study(self, study: optuna.Study, storage: str) -> None:
        """A resumed study's trials searched each parameter in a way Optuna can go on with: the same
        kind, and for a categorical the same choices (a float or int range may move)."""
        ours = {parameter.key: parameter.distribution() for parameter in self.parameters}
        for trial in study.get_trials(deepcopy=False):
            for key, theirs in trial.distributions.items():
                if key not in ours:
                    continue
                try:
                    optuna.distributions.check_distribution_compatibility(theirs, ours[key])
                except ValueError:
                    raise TuneError(f"search space {self.path}: {key}: study {study.study_name!r} in {redacted(storage)} "
                                    f"searched it as {_described(theirs)}, this space as {_described(ours[key])}; "
                                    f"give another --study-name for the new space") from None  # fmt: skip

    def check(self, job: dict[str, Any], configs: list[str]) -> None:
        """Every key names a setting of the job (``data.batch_size`` may skip ``init_args``, as on the command line)."""
        for parameter in self.parameters:
            if not _in_config(job, parameter.key.split(".")):
                raise TuneError(f"search space {self.path}: {parameter.key}: not a setting of the job "
                                f"({', '.join(configs)}); `wdrec fit --config ... --print_config` lists them")  # fmt: skip


def _parameter(path: Path, key: Any, spec: Any) -> Parameter:
    def refuse(expected: str) -> TuneError:
        return TuneError(f"search space {path}: {key}: {expected}")

    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise refuse("a parameter is a command-line key without dashes, such as model.architecture.dropout")
    if not isinstance(spec, dict) or spec.get("type") not in FIELDS:
        raise refuse(f"expected {{type: float|int|categorical, ...}}, got {_short(spec)}")
    kind = spec["type"]
    if unknown := sorted(set(spec) - FIELDS[kind] - {"type"}):
        raise refuse(f"unknown field {', '.join(map(str, unknown))} for type {kind}; expected {', '.join(sorted(FIELDS[kind]))}")
    if kind == "categorical":
        if not isinstance(spec.get("choices"), list) or not spec["choices"]:
            raise refuse(f"type categorical needs choices, a non-empty list; got {_short(spec.get('choices'))}")
        return Parameter(key, kind, choices=tuple(spec["choices"]))
    low, high, step = (_number(spec.get(name), kind) for name in ("low", "high", "step"))
    log = spec.get("log", False)
    if low is None or high is None or low >= high:
        raise refuse(f"type {kind} needs numbers low < high; got low {_short(spec.get('low'))}, high {_short(spec.get('high'))}")
    if not isinstance(log, bool):
        raise refuse(f"log is true or false, got {_short(log)}")
    if (step is None) != ("step" not in spec) or (step is not None and step <= 0):
        raise refuse(f"step is a positive {kind}, got {_short(spec.get('step'))}")
    if log and (step is not None or low <= 0):
        raise refuse("log needs low > 0 and no step")
    return Parameter(key, kind, low=low, high=high, log=log, step=step)


def _number(value: Any, kind: str) -> float | None:
    """An int for ``int``; for ``float`` any number, also text like ``1e-4`` (which YAML reads as text)."""
    if isinstance(value, bool):
        return None
    if kind == "int":
        return value if isinstance(value, int) else None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
        return None
    return float(value) if isinstance(value, int | float) else None


def _label(choice: Any) -> Any:
    """What Optuna stores for a categorical choice: scalars as they are, lists and mappings as JSON text."""
    return choice if choice is None or isinstance(choice, bool | int | float | str) else json.dumps(choice)


def _described(distribution: optuna.distributions.BaseDistribution) -> str:
    """A distribution as a search space file writes it."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return f"categorical, choices {list(distribution.choices)}"
    kind = "float" if isinstance(distribution, optuna.distributions.FloatDistribution) else "int"
    spread = ", log" if distribution.log else f", step {distribution.step}" if distribution.step else ""
    return f"{kind} from {distribution.low} to {distribution.high}{spread}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _in_config(node: Any, keys: list[str]) -> bool:
    for key in keys:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, dict) and isinstance(node.get("init_args"), dict) and key in node["init_args"]:
            node = node["init_args"][key]
        else:
            return False
    return True


def overrides(values: dict[str, Any]) -> list[str]:
    """``--key=value`` for each value; text goes as it is (list choices are JSON text already), floats
    to 12 digits (a step of 0.05 gives 0.30000000000000004)."""
    return [f"--{key}={_text(value)}" for key, value in values.items()]


def _text(value: Any) -> str:
    if isinstance(value, float):
        return json.dumps(float(f"{value:.12g}"))
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class JobData:
    """What :func:`selection_for` reads of a data module, from the job's config: no data is loaded."""

    target: str
    full_ranking: bool


def job_selection(job: dict[str, Any]) -> Selection:
    data = job["data"]
    module, _, name = data["class_path"].rpartition(".")
    data_class = getattr(importlib.import_module(module), name)
    arguments = data["init_args"]
    return selection_for(JobData(arguments["target"], data_class.ranks_catalogue(arguments["target"], arguments.get("ranking"))))


def open_study(storage_url: str, name: str, selection: Selection, seed: int | None, prune: bool) -> optuna.Study:
    """Create the study or load it; a study selecting by another metric is refused."""
    try:
        storage = RDBStorage(storage_url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))  # fmt: skip
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            load_if_exists=True,
            direction="maximize" if selection.mode == "max" else "minimize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            # Five trials before anything is pruned, and never on the first epoch's noisy value.
            pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1) if prune else optuna.pruners.NopPruner(),
        )
    except (SQLAlchemyError, ValueError) as error:
        raise TuneError(f"Optuna storage {redacted(storage_url)}: {' '.join(str(error).split())[:300]}") from None
    metric = study.user_attrs.get(METRIC_ATTR, selection.metric)
    if metric != selection.metric:
        raise TuneError(f"study {name!r} in {redacted(storage_url)} selects by {metric}, this job by {selection.metric}: "
                        f"give another --study-name")  # fmt: skip
    study.set_user_attr(METRIC_ATTR, metric)
    return study


def redacted(url: str) -> str:
    """The storage URL without its password (for messages and tags); an unreadable URL as given."""
    with contextlib.suppress(SQLAlchemyError):
        return make_url(url).render_as_string(hide_password=True)
    return url


def fail_abandoned_trials(study: optuna.Study) -> list[int]:
    """Fail the trials left RUNNING by a process of this host that is gone (killed), and queue
    each once again with its parameters, at once rather than after the heartbeat's grace period
    (which catches other machines' dead trials). Returns their numbers."""
    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get(HOST_TAG) != host or not str(attrs.get(PID_TAG, "")).isdigit():
            continue
        if process_alive(int(attrs[PID_TAG]), attrs.get(START_TAG)):
            continue
        study.tell(trial.number, state=TrialState.FAIL)
        RetryHeartbeatStaleTrialCallback(max_retry=1)(study, trial)
        failed.append(trial.number)
    return failed


@dataclass(frozen=True)
class ParentRun:
    """The study's MLflow run, in the experiment the trials log to; the trials are its children."""

    client: MlflowClient
    run_id: str
    experiment_id: str

    @classmethod
    def open(cls, study: optuna.Study, job: dict[str, Any], storage_url: str) -> ParentRun | None:
        """The study's parent run (kept in the study, so that a resumed study and other machines
        find it), else a new one; None when the job logs to no MLflow (``--trainer.logger false``)."""
        logger = job["trainer"].get("logger")
        if not isinstance(logger, dict) or logger.get("class_path") != TRACKED_LOGGER:
            return None
        settings = logger["init_args"]
        uri = resolve_tracking_uri(settings.get("tracking_uri"))
        check_tracking_uri(uri)
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(settings["experiment_name"])
        experiment_id = (experiment.experiment_id if experiment else
                         client.create_experiment(settings["experiment_name"], artifact_location=settings.get("artifact_location")))  # fmt: skip
        owner = process_tags()  # a parent left RUNNING by a killed tune is closed like any abandoned run
        with contextlib.suppress(MlflowException, KeyError):
            run_id = study.user_attrs[PARENT_ATTR]
            if client.get_run(run_id).info.experiment_id == experiment_id:
                client.update_run(run_id, status="RUNNING")
                for key, value in owner.items():
                    client.set_tag(run_id, key, value)
                return cls(client, run_id, experiment_id)
        tags = {STUDY_TAG: study.study_name, "wdrec.tune.storage": redacted(storage_url), "wdrec_version": wdrec.__version__, **owner}
        run_id = client.create_run(experiment_id, run_name=f"tune-{study.study_name}", tags=tags).info.run_id
        study.set_user_attr(PARENT_ATTR, run_id)
        return cls(client, run_id, experiment_id)

    def trial_args(self, job: dict[str, Any], study: optuna.Study, number: int) -> list[str]:
        """A trial's logger settings: its MLflow run is created as this run's child."""
        tags = {**(job["trainer"]["logger"]["init_args"].get("tags") or {}), "mlflow.parentRunId": self.run_id,
                STUDY_TAG: study.study_name, TRIAL_TAG: str(number)}  # fmt: skip
        return [f"--trainer.logger.init_args.run_name={study.study_name}-trial-{number}",
                f"--trainer.logger.init_args.tags={json.dumps(tags)}"]  # fmt: skip

    def close_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Tag the trial's child run with its Optuna state; a pruned one ends KILLED (Lightning
        ended it FAILED, as for any exception; stopping it was the point)."""
        found = self.client.search_runs([self.experiment_id], max_results=1, filter_string=(
            f"tags.`mlflow.parentRunId` = '{self.run_id}' and tags.`{TRIAL_TAG}` = '{trial.number}'"))  # fmt: skip
        for child in found:
            self.client.set_tag(child.info.run_id, STATE_TAG, trial.state.name)
            if trial.state == TrialState.PRUNED:
                self.client.set_terminated(child.info.run_id, status="KILLED")

    def log_study(self, study: optuna.Study, selection: Selection, space: SearchSpace, best_config: str) -> None:
        """Best value (a metric, stepped by finished trials), best parameters (tags and JSON), the
        study's plots, its trials as CSV, the search space and the best config."""
        best, finished = study.best_trial, len(study.get_trials(deepcopy=False, states=FINISHED))
        run_id, client = self.run_id, self.client
        client.log_param(run_id, "selection_metric", selection.metric)
        client.log_param(run_id, "direction", study.direction.name.lower())
        client.log_metric(run_id, f"best_{selection.metric}", best.value, step=finished)
        client.set_tag(run_id, "wdrec.tune.best_trial", str(best.number))
        for key, value in best.params.items():
            client.set_tag(run_id, f"best.{key}", str(value))
        client.log_dict(run_id, {"trial": best.number, "value": best.value, "params": best.params}, "best_params.json")
        client.log_text(run_id, best_config, "best_config.yaml")
        client.log_text(run_id, space.path.read_text(), "search_space.yaml")
        client.log_text(run_id, study.trials_dataframe().to_csv(index=False), "trials.csv")
        for name, axes in study_plots(study, selection.metric):
            client.log_figure(run_id, axes.figure, f"plots/{name}.png")
            plt.close(axes.figure)

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def study_plots(study: optuna.Study, metric: str) -> list[tuple[str, Any]]:
    """Optimisation history and each trial's validation curve; parameter importances once two
    trials completed (they need a spread to attribute)."""
    from optuna.visualization import matplotlib as plots

    figures = [("optimization_history", plots.plot_optimization_history(study, target_name=metric)),
               ("intermediate_values", plots.plot_intermediate_values(study))]  # fmt: skip
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= 2:
        figures.append(("param_importances", plots.plot_param_importances(study, target_name=metric)))
    for _, axes in figures:
        axes.figure.set_size_inches(10, 5)  # room for the long keys and the legend beside the plot
        axes.figure.tight_layout()
    return figures


def print_trial(study: optuna.Study, trial: FrozenTrial, metric: str, n_trials: int) -> None:
    """Progress: one line per trial, with the best so far."""
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    value = f"{metric} {trial.value:.5g}" if trial.value is not None else "no value"
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    line = f"wdrec tune: [{finished}/{n_trials}] trial {trial.number} {trial.state.name.lower()}, {value} ({seconds:.0f} s)"
    with contextlib.suppress(ValueError):  # no completed trial yet
        line += f"; best: trial {study.best_trial.number}, {metric} {study.best_value:.5g}"
    print(f"{line}; {' '.join(overrides(trial.params))}", flush=True)


def write_atomically(path: Path, text: str) -> None:
    """Beside the target, then renamed: a reader never sees half a config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wdrec tune", allow_abbrev=False,
        description="Hyperparameter search: each trial is `wdrec fit` with the trial's values. Any other "
                    "--trainer.*, --data.*, --model.* argument is passed to every trial.",
    )  # fmt: skip
    parser.add_argument("--config", action="append", required=True, help="the job's config, as for wdrec fit (repeatable)")
    parser.add_argument("--space", type=Path, required=True, help="search space YAML, e.g. configs/tune/movielens100k-ctr.yaml")
    parser.add_argument("--n-trials", type=int, default=20, help="finished trials the study should have (default 20)")
    parser.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna RDB URL (default {DEFAULT_STORAGE})")
    parser.add_argument("--study-name", help="default: the configs' file names, joined by +")
    parser.add_argument("--output", type=Path, help="the best trial's config (default best-<study name>.yaml)")
    parser.add_argument("--seed", type=int, help="the TPE sampler's seed (give each machine its own)")
    parser.add_argument("--pruner", choices=["median", "none"], default="median", help="stop unpromising trials early")
    return parser


def tune(argv: list[str]) -> optuna.Study:
    """``wdrec tune --config JOB.yaml --space SPACE.yaml [options] [--trainer.* --data.* --model.* ...]``."""
    options, passthrough = parser().parse_known_args(argv)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")  # trials run in-process
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # print_trial says more in one line
    space = SearchSpace.load(options.space)
    job_args = [*(arg for config in options.config for arg in ("--config", config)), *passthrough]
    job = yaml.safe_load(resolved_config(job_args))
    space.check(job, options.config)
    selection = job_selection(job)
    name = options.study_name or "+".join(Path(config).stem for config in options.config)
    output = options.output or Path(f"best-{name}.yaml")
    study = open_study(options.storage, name, selection, options.seed, options.pruner == "median")
    space.check_study(study, options.storage)
    for number in fail_abandoned_trials(study):
        print(f"wdrec tune: trial {number} was left running by a process that is gone: failed, queued again", flush=True)
    parent = ParentRun.open(study, job, options.storage)

    def objective(trial: optuna.Trial) -> float:
        for key, value in process_tags().items():  # so that a killed trial is found (fail_abandoned_trials)
            trial.set_user_attr(key, value)
        logging_args = parent.trial_args(job, study, trial.number) if parent else []
        pruning = PyTorchLightningPruningCallback(trial, monitor=selection.metric)
        with tempfile.TemporaryDirectory(prefix=f"wdrec-tune-{trial.number}-") as checkpoints:
            cli = run(["fit", *QUIET, *job_args, *overrides(space.suggest(trial)), "--registry.enabled=false",
                       f"--checkpoint.dirpath={checkpoints}", f"--last_checkpoint.dirpath={checkpoints}", *logging_args],
                      callbacks=[pruning])  # fmt: skip
        score = cli.trainer.checkpoint_callback.best_model_score  # the epoch `wdrec fit` would keep
        if score is None:  # no checkpoint written (fast_dev_run): the last epoch's value
            score = cli.trainer.callback_metrics.get(selection.metric)
        if score is None:
            raise TuneError(f"trial {trial.number} logged no {selection.metric}: does the job validate?")
        return float(score)

    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    print(f"wdrec tune: study {name!r} in {redacted(options.storage)}: {finished} of {options.n_trials} trials "
          f"finished; {selection.metric} ({selection.mode})" + (f"; MLflow run {parent.run_id}" if parent else ""), flush=True)  # fmt: skip
    callbacks = [optuna.study.MaxTrialsCallback(options.n_trials, states=FINISHED),
                 partial(print_trial, metric=selection.metric, n_trials=options.n_trials)]  # fmt: skip
    try:
        if finished < options.n_trials:
            study.optimize(objective, n_trials=options.n_trials - finished, timeout=options.timeout,
                           callbacks=[*callbacks, *([parent.close_trial] if parent else [])], gc_after_trial=True)  # fmt: skip
    except BaseException as error:
        if parent:
            parent.end("KILLED" if isinstance(error, KeyboardInterrupt | SystemExit) else "FAILED")
        raise
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        print("wdrec tune: no trial completed; nothing written", flush=True)
    else:
        best = study.best_trial
        config = resolved_config([*job_args, *overrides(best.params)])
        write_atomically(output, f"# wdrec tune: study {name!r}, trial {best.number}, {selection.metric} {best.value:.6g}\n"
                                 f"# wdrec fit --config {output}\n{config}")  # fmt: skip
        if parent:
            parent.log_study(study, selection, space, config)
        print(f"wdrec tune: best trial {best.number}, {selection.metric} {best.value:.5g}; config written to {output}", flush=True)
    if parent:
        parent.end("FINISHED")
    return study
