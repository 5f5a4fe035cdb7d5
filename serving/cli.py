"""``wdrec-serve``: serve a model bundle over HTTP with uvicorn.

    wdrec-serve --model models:/wdrec@champion
    wdrec-serve --model bundles/<run_id> --port 8080 --workers 2

Flags override the ``WDREC_*`` environment; they are written back to it so that every
uvicorn worker (``--workers``) builds the app from the same settings. ``models:/`` URIs
resolve against ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working
directory, as ``wdrec fit`` tracks. The model is loaded and probed once before uvicorn
starts, so a missing, corrupted or unknown model stops here with one line, not a trace.
With ``--workers N`` (N > 1) it also makes the workers' state directory (serving/cluster.py:
the model they all follow, and prometheus-client's multiprocess files) and removes it at exit.
"""

from __future__ import annotations

import argparse
import logging.config
import os
import shutil
import sys

from pydantic import ValidationError

from serving.config import Settings, get_settings
from serving.logs import log_config
from wdrec.tracking_store import DEFAULT_TRACKING_URI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wdrec-serve", description="Serve a wdrec model bundle over HTTP (FastAPI + uvicorn).")
    parser.add_argument("--model", help="bundle directory, models:/name@alias or models:/name/N (env WDREC_MODEL)")
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1; env WDREC_HOST)")
    parser.add_argument("--port", type=int, help="port (default 8000; env WDREC_PORT)")
    parser.add_argument("--workers", type=int, help="worker processes (default 1; env WDREC_WORKERS)")
    parser.add_argument("--retrieval", choices=["full", "two_stage"],
                        help="full: score the whole catalogue per request (default); two_stage: rank only --candidates "
                             "items from the retrieval stage (env WDREC_RETRIEVAL)")  # fmt: skip
    parser.add_argument("--candidates", type=int, help="items ranked per request with --retrieval two_stage (default 300; env WDREC_CANDIDATES)")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], help="env WDREC_LOG_LEVEL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for flag, value in (("MODEL", args.model), ("HOST", args.host), ("PORT", args.port),
                        ("WORKERS", args.workers), ("RETRIEVAL", args.retrieval), ("CANDIDATES", args.candidates),
                        ("LOG_LEVEL", args.log_level)):  # fmt: skip
        if value is not None:
            os.environ[f"WDREC_{flag}"] = str(value)
    if not os.environ.get("MLFLOW_TRACKING_URI"):  # as `wdrec fit`: the store in the working directory
        os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + os.path.abspath(DEFAULT_TRACKING_URI.removeprefix("sqlite:///"))
    get_settings.cache_clear()
    try:
        settings = Settings()
    except ValidationError as error:
        problem = error.errors()[0]
        sys.exit(f"wdrec-serve: WDREC_{str(problem['loc'][0]).upper()}: {problem['msg']}")
    if not settings.model:
        sys.exit("wdrec-serve: no model: pass --model <bundle path | models:/wdrec@champion> or set WDREC_MODEL")
    logging.config.dictConfig(log_config(settings.log_level))
    version = check_model(settings)
    state = None
    os.environ.pop("WDREC_STATE_DIR", None)  # wdrec-serve's own: made afresh per server, never inherited
    if settings.workers > 1:  # the workers follow one published model and count requests together (serving/cluster.py)
        from serving.cluster import METRICS, create_state

        state = create_state(settings.model, version)
        os.environ["WDREC_STATE_DIR"] = str(state)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(state / METRICS)  # before the workers import prometheus_client

    import uvicorn

    try:
        uvicorn.run(
            "serving.main:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            timeout_keep_alive=settings.keep_alive_seconds,
            log_config=log_config(settings.log_level),
            access_log=False,
        )
    finally:
        if state is not None:
            shutil.rmtree(state, ignore_errors=True)


def check_model(settings: Settings) -> str | None:
    """Load the model once before starting: a bad one ends the process with one line. Returns its version."""
    import torch

    from serving.loader import ModelLoadError, load_model

    torch.set_num_threads(settings.torch_threads)
    try:
        return load_model(settings.model, settings.fast_path, settings.two_stage_candidates).info.version
    except ModelLoadError as error:
        sys.exit(f"wdrec-serve: cannot serve {settings.model}: {error}")


if __name__ == "__main__":
    main()
