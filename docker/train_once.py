#!/app/.venv/bin/python
"""`wdrec fit` unless the registry already has a champion: the compose `train` job.

`docker compose up` starts every service each time; without this guard each `up` would spend
minutes retraining a model that is already served. The guard asks the tracking server named by
MLFLOW_TRACKING_URI whether the alias in WDREC_MODEL (models:/<name>@<alias>, what the API serves)
resolves; if it does, it says so and exits 0. RETRAIN=1 trains anyway, and so does running
`wdrec fit` itself (`docker compose run --rm train wdrec fit --config ...`).

Arguments are passed to `wdrec fit`, followed by the words of WDREC_FIT_ARGS (for short runs:
"--trainer.max_epochs 1").
"""

from __future__ import annotations

import os
import re
import shlex
import sys

TRUE = {"1", "true", "yes", "on"}


def champion(uri: str) -> str | None:
    """The version that ``models:/name@alias`` resolves to, or None when the alias does not exist."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    match = re.fullmatch(r"models:/([^/@]+)@([^/@]+)", uri)
    if match is None:
        sys.exit(f"wdrec-train-once: WDREC_MODEL must be models:/<name>@<alias>, got {uri!r}")
    name, alias = match.groups()
    try:
        return MlflowClient().get_model_version_by_alias(name, alias).version
    except MlflowException as error:
        # No such registered model, or no such alias on it: both mean "nothing to serve yet".
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        sys.exit(
            f"wdrec-train-once: cannot ask the registry at {os.environ.get('MLFLOW_TRACKING_URI')} about {uri}: {error}"
        )


def main() -> None:
    uri = os.environ.get("WDREC_MODEL", "models:/wdrec@champion")
    tracking = os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking:
        sys.exit(
            "wdrec-train-once: MLFLOW_TRACKING_URI is not set; the guard needs the registry the API reads"
        )
    fit = ["wdrec", "fit", *sys.argv[1:], *shlex.split(os.environ.get("WDREC_FIT_ARGS", ""))]
    if os.environ.get("RETRAIN", "").strip().lower() in TRUE:
        print(f"wdrec-train-once: RETRAIN is set: training ({shlex.join(fit)})", flush=True)
    else:
        version = champion(uri)
        if version is not None:
            print(
                f"wdrec-train-once: {uri} is version {version} at {tracking}; not retraining. "
                "Retrain with RETRAIN=1, or `docker compose run --rm train wdrec fit --config ...`.",
                flush=True,
            )
            return
        print(f"wdrec-train-once: {uri} does not exist yet: training ({shlex.join(fit)})", flush=True)
    os.execvp(fit[0], fit)


if __name__ == "__main__":
    main()
