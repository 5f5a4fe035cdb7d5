"""Logging a bundle as an MLflow model, registering it, and the ``champion`` alias rule.

The alias moves to a new version only when its validation metric beats the current
champion's; every version carries its metric as a tag so the comparison needs no run lookup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model

import wdrec
from wdrec.export.bundle import read_bundle
from wdrec.export.pyfunc_model import signature

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
# wdrec is on no package index: the package travels with the model as its code (``code/wdrec``),
# which loading puts first on sys.path.
WDREC_CODE = Path(wdrec.__file__).parent
CHAMPION = "champion"
TASK_TAG, METRIC_TAG = "wdrec.task", "wdrec.selection_metric"  # on every version: what its champion rule compares
# What loading and predicting import (pyfunc_model → bundle, scorer, features, widedeep: no Lightning),
# pinned to the versions that log the model. Declared, not inferred: inferring re-loads the model in a
# subprocess. Versions drop a local label (torch's ``+cpu``): ``torch==2.13.0`` installs from PyPI, and
# still takes the ``+cpu`` build where pip is pointed at PyTorch's CPU index or a local wheel.
PIP_REQUIREMENTS = [
    f"{name}=={version(name).partition('+')[0]}" for name in ("mlflow", "torch", "numpy", "pandas", "pyarrow", "safetensors")
]


@dataclass
class Registration:
    name: str
    version: str
    metric: str
    value: float
    promoted: bool
    previous_champion: str | None
    refused: str | None = None  # why the champion cannot be compared with this version


def log_pyfunc_model(bundle_dir: Path, run_id: str, name: str = "model") -> str:
    """Log the bundle as a pyfunc model of run ``run_id``; returns its model URI."""
    bundle = read_bundle(bundle_dir)
    example = pd.DataFrame(
        {"user_id": bundle.users["user_id"].astype(str).head(2).tolist() or ["1"],
         "item_id": bundle.items["item_id"].astype(str).head(2).tolist()}
    )  # fmt: skip
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PYFUNC_CODE),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(WDREC_CODE)],
            signature=signature(),  # declares similar_k: MLflow drops undeclared parameters
            input_example=example,
            pip_requirements=PIP_REQUIREMENTS,
        )
    return info.model_uri


def register(
    model_uri: str,
    name: str,
    metric: str,
    value: float,
    mode: Literal["max", "min"] = "max",
    task: str = "implicit",
    client: MlflowClient | None = None,
    description: str | None = None,
) -> Registration:
    """Register ``model_uri`` as a new version of ``name``; move ``champion`` if it is better.

    ``task`` is the training target (``implicit``, ``binary``, ``rating``). The alias never moves
    across tasks or selection metrics: a rating model's RMSE says nothing about a ranking model,
    and serving would silently switch from probabilities to ratings. ``description`` (Markdown,
    the model card) is shown on the version's page in the MLflow UI.
    """
    client = client or MlflowClient()
    tags = {metric: str(value), TASK_TAG: task, METRIC_TAG: metric}
    version = mlflow.register_model(model_uri, name, tags=tags).version
    if description:
        client.update_model_version(name, version, description=description)
    previous = champion_version(client, name)
    refused = None if previous is None else _incomparable(client, previous, task, metric)
    best = None if previous is None or refused else _metric_of(client, previous, metric)
    better = best is None or math.isnan(best) or (value > best if mode == "max" else value < best)
    promoted = refused is None and better and not math.isnan(value)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    return Registration(name, str(version), metric, value, promoted,
                        None if previous is None else str(previous.version), refused)  # fmt: skip


def champion_version(client: MlflowClient, name: str):  # noqa: ANN201 - mlflow ModelVersion
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _incomparable(client: MlflowClient, champion, task: str, metric: str) -> str | None:  # noqa: ANN001
    """Why a challenger cannot be compared with ``champion`` (None when it can).

    Versions registered before the task tags existed carry only ``{metric: value}``; their task
    is the run's ``target`` parameter.
    """
    tags = champion.tags
    their_metric = tags.get(METRIC_TAG) or next((key for key in tags if key.startswith("val_")), None)
    their_task = tags.get(TASK_TAG)
    if their_task is None and champion.run_id:
        their_task = client.get_run(champion.run_id).data.params.get("target")
    if their_task not in (None, task) or their_metric != metric:
        return (
            f"the champion (version {champion.version}) is a {their_task or 'unknown'}-task model selected on "
            f"{their_metric or 'an unknown metric'}, this run is a {task}-task model selected on {metric}: "
            f"register it under its own name (registry.name)"
        )
    return None


def _metric_of(client: MlflowClient, version, metric: str) -> float | None:  # noqa: ANN001
    if metric in version.tags:
        return float(version.tags[metric])
    if version.run_id:
        value = client.get_run(version.run_id).data.metrics.get(metric)
        return None if value is None else float(value)
    return None


def resolve_bundle(model_uri: str, client: MlflowClient | None = None) -> tuple[Path, dict[str, str]]:
    """A local bundle directory for a path or a ``models:/name@alias`` / ``models:/name/N`` URI,
    plus what the registry says about it (name, version, run_id) when it came from there."""
    if not model_uri.startswith("models:/"):
        return Path(model_uri).expanduser(), {}
    client = client or MlflowClient()
    reference = model_uri.removeprefix("models:/")
    name, _, rest = reference.partition("@") if "@" in reference else reference.partition("/")
    version = client.get_model_version_by_alias(name, rest) if "@" in reference else client.get_model_version(name, rest)
    # The version's storage location, from the client's own registry (a models:/ artifact URI would be
    # looked up in the process-wide registry instead).
    location = client.get_model_version_download_uri(name, version.version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, tracking_uri=client.tracking_uri))
    # MLflow stores the `bundle` artifact under the bundle directory's own name (the run id): ask MLmodel where.
    bundle = Model.load(local / "MLmodel").flavors["python_function"]["artifacts"]["bundle"]["path"]
    return local / bundle, {"name": name, "version": str(version.version), "run_id": version.run_id or ""}
