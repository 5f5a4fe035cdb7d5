"""MLflow tracking with wdrec's defaults, and the resolved config logged into each run.

Two facts shape this file (DESIGN.md): MLflow >= 3.13 refuses Lightning's default
``./mlruns`` file store, so the default here is ``sqlite:///mlflow.db`` in the working
directory (``$MLFLOW_TRACKING_URI`` wins when set); and LightningCLI's own
``SaveConfigCallback`` fails without a ``log_dir``, so the config is logged to MLflow by
:class:`LogConfigToMLflow` instead.

A run whose process dies without closing it (``kill -9``, out of memory, power loss) would
stay ``RUNNING`` forever. Each run therefore records the process that owns it (tags
``wdrec.host``, ``wdrec.pid``, ``wdrec.process_start``), and every ``wdrec fit`` starts by
marking the experiment's ``RUNNING`` runs whose process on this host is gone as ``FAILED``,
with a ``wdrec.note`` tag saying why (:func:`close_abandoned_runs`). Checkpoints carry the
MLflow run id, so a fit resumed with ``--ckpt_path`` links the two runs both ways
(``wdrec.resumed_from_run`` on the new one, ``wdrec.resumed_in_run`` on the old one).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only, rank_zero_warn

import wdrec
from wdrec.tracking_store import check_tracking_uri, resolve_tracking_uri

HOST_TAG, PID_TAG, START_TAG = "wdrec.host", "wdrec.pid", "wdrec.process_start"
NOTE_TAG = "wdrec.note"
RESUMED_FROM_TAG, RESUMED_IN_TAG = "wdrec.resumed_from_run", "wdrec.resumed_in_run"


def check_logger_config(logger: Any) -> None:
    """Check the tracking store of each MLflow logger in a (not yet instantiated) ``trainer.logger``
    config, so that the CLI can stop before it reads any data (see :func:`check_tracking_uri`)."""
    for entry in logger if isinstance(logger, list) else [logger]:
        init_args = entry.get("init_args") if hasattr(entry, "get") else None
        if init_args is not None and "MLflow" in str(entry.get("class_path", "")) and hasattr(init_args, "get"):
            check_tracking_uri(resolve_tracking_uri(init_args.get("tracking_uri")))


def git_commit() -> str | None:
    """The commit of the checkout wdrec runs from (an editable install), if it is one."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(wdrec.__file__).parent)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, from /proc), telling a reused pid
    from the original; None when there is no such live process (or no /proc: not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    if len(fields) < 20 or fields[0] in ("Z", "X"):  # a zombie has ended: only its exit status is left
        return None
    return fields[19]  # field 22 of proc_pid_stat(5), starttime


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` (started at ``started``, see :func:`process_start`) still runs on this host."""
    if Path("/proc/self/stat").exists():
        now = process_start(pid)
        return now is not None and (started is None or now == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def process_tags() -> dict[str, str]:
    """Tags naming the process that owns a run, for :func:`close_abandoned_runs`."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    if started := process_start(os.getpid()):
        tags[START_TAG] = started
    return tags


def close_abandoned_runs(tracking_uri: str, experiment_name: str) -> list[str]:
    """Mark ``RUNNING`` runs of the experiment whose process on this host is gone as ``FAILED``.

    Such a run was killed (``kill -9``, out of memory) before it could close itself. Runs
    started on other hosts, or without process tags, are left alone: whether their process
    lives cannot be told from here. Returns the ids of the runs it closed.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    host, closed = socket.gethostname(), []
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000)
    for run in runs:
        tags = run.data.tags
        if tags.get(HOST_TAG) != host or not tags.get(PID_TAG, "").isdigit():
            continue
        pid = int(tags[PID_TAG])
        if process_alive(pid, tags.get(START_TAG)):
            continue
        when = datetime.now(UTC).isoformat(timespec="seconds")
        note = (f"marked FAILED at {when} by wdrec fit (pid {os.getpid()}): process {pid} on {host} ended without "
                f"closing this run (killed or crashed); resume from its last checkpoint with --ckpt_path last")  # fmt: skip
        client.set_tag(run.info.run_id, NOTE_TAG, note)
        client.set_terminated(run.info.run_id, status="FAILED")
        closed.append(run.info.run_id)
    return closed


class MLflowTracking(MLFlowLogger):
    """Lightning's ``MLFlowLogger`` with a working default store and provenance tags.

    Before the new run starts, runs of the experiment left ``RUNNING`` by a process of this
    host that is gone are marked ``FAILED`` (:func:`close_abandoned_runs`).

    Args:
        experiment_name: MLflow experiment (created when missing).
        tracking_uri: defaults to ``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``.
        run_name, tags, run_id, artifact_location: as in ``MLFlowLogger``.
    """

    def __init__(
        self,
        experiment_name: str = "wdrec",
        tracking_uri: str | None = None,
        run_name: str | None = None,
        tags: dict[str, Any] | None = None,
        run_id: str | None = None,
        artifact_location: str | None = None,
    ) -> None:
        uri = resolve_tracking_uri(tracking_uri)
        check_tracking_uri(uri)
        if rank_zero_only.rank == 0:
            try:
                closed = close_abandoned_runs(uri, experiment_name)
            except Exception as error:  # housekeeping must not stop a fit that the store can take
                rank_zero_warn(f"could not look for abandoned MLflow runs: {type(error).__name__}: {error}")
                closed = []
            for abandoned in closed:
                rank_zero_warn(f"MLflow run {abandoned} was left RUNNING by a process that is gone: marked FAILED")
        provenance = {"wdrec_version": wdrec.__version__, **process_tags()}
        if commit := git_commit():
            provenance |= {"git_commit": commit, "mlflow.source.git.commit": commit}
        super().__init__(
            experiment_name=experiment_name,
            tracking_uri=uri,
            run_name=run_name,
            tags={**provenance, **(tags or {})},
            run_id=run_id,
            artifact_location=artifact_location,
            log_model=False,  # the registry callback logs one pyfunc model, not raw checkpoints
        )


def mlflow_logger(trainer: L.Trainer) -> MLFlowLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


class LogConfigToMLflow(SaveConfigCallback):
    """Log the resolved CLI config and the FeatureSpec to the MLflow run, and keep both in
    every checkpoint so that ``wdrec-export`` can rebuild data and model from it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False})
        self.config_yaml = self.parser.dump(self.config, skip_none=False)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer)
        if logger is None:
            return
        logger.experiment.log_text(logger.run_id, self.config_yaml, "config.yaml")
        datamodule = trainer.datamodule
        logger.experiment.log_dict(logger.run_id, datamodule.feature_spec.to_dict(), "feature_spec.json")
        logger.experiment.log_dict(logger.run_id, datamodule.summary(), "data_summary.json")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["wdrec_config"] = self.config_yaml
        checkpoint["feature_spec"] = trainer.datamodule.feature_spec.to_dict()
        logger = mlflow_logger(trainer)
        if logger is not None and trainer.is_global_zero:
            checkpoint["mlflow_run_id"] = logger.run_id

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """A fit resumed from a checkpoint: link its run and the run that wrote the checkpoint."""
        previous = checkpoint.get("mlflow_run_id")
        logger = mlflow_logger(trainer)
        if not previous or logger is None or not trainer.is_global_zero or trainer.state.fn != "fit":
            return
        if previous == logger.run_id:
            return
        logger.experiment.set_tag(logger.run_id, RESUMED_FROM_TAG, previous)
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # the checkpoint came from another tracking store: nothing to link
            logger.experiment.set_tag(previous, RESUMED_IN_TAG, logger.run_id)
