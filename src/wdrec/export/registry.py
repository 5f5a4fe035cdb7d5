"""Logging a bundle as an MLflow model, registering it, and the ``champion`` alias rule.

The alias moves to a new version only when its validation metric beats the current
champion's; every version carries its metric as a tag so the comparison needs no run lookup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model, infer_signature

from wdrec.export.bundle import read_bundle
from wdrec.export.scorer import Scorer

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
CHAMPION = "champion"
# Declared, not inferred: inferring requirements re-loads the model in a subprocess.
PIP_REQUIREMENTS = ["wdrec", "torch", "lightning", "pandas", "pyarrow", "safetensors", "mlflow"]


@dataclass
class Registration:
    name: str
    version: str
    metric: str
    value: float
    promoted: bool
    previous_champion: str | None


def log_pyfunc_model(bundle_dir: Path, run_id: str, name: str = "model") -> str:
    """Log the bundle as a pyfunc model of run ``run_id``; returns its model URI."""
    bundle = read_bundle(bundle_dir)
    scorer = Scorer(bundle)
    example = pd.DataFrame(
        {"user_id": bundle.users["user_id"].astype(str).head(2).tolist() or ["1"],
         "item_id": bundle.items["item_id"].astype(str).head(2).tolist()}
    )  # fmt: skip
    signature = infer_signature(example, scorer.score_pairs(example["user_id"].tolist(), example["item_id"].tolist()))
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PYFUNC_CODE),
            artifacts={"bundle": str(bundle_dir)},
            signature=signature,
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
    run_id: str | None = None,
    client: MlflowClient | None = None,
) -> Registration:
    """Register ``model_uri`` as a new version of ``name``; move ``champion`` if it is better."""
    client = client or MlflowClient()
    version = mlflow.register_model(model_uri, name, tags={metric: str(value)}).version
    previous = champion_version(client, name)
    best = None if previous is None else _metric_of(client, previous, metric)
    better = best is None or math.isnan(best) or (value > best if mode == "max" else value < best)
    if better and not math.isnan(value):
        client.set_registered_model_alias(name, CHAMPION, version)
    return Registration(name, str(version), metric, value, better and not math.isnan(value),
                        None if previous is None else str(previous.version))  # fmt: skip


def champion_version(client: MlflowClient, name: str):  # noqa: ANN201 - mlflow ModelVersion
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
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
