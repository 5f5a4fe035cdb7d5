"""What one ``wdrec fit`` leaves in MLflow: params, metrics, config, plots, provenance, model."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from wdrec.tracking_store import DEFAULT_TRACKING_URI, check_tracking_uri, resolve_tracking_uri

CONTRACT_METRICS = ("train_loss", "val_loss", "val_auc", "val_logloss", "val_hr_10", "val_ndcg_10", "val_recall_10")


@pytest.fixture(scope="module")
def run_data(trained_run):
    client = MlflowClient(trained_run.tracking_uri)
    return client, client.get_run(trained_run.run_id)


def test_run_finishes_with_params_metrics_and_provenance(run_data) -> None:
    _, run = run_data
    assert run.info.status == "FINISHED"
    assert {"architecture/hidden", "architecture/dropout", "architecture/activation", "split", "target", "negatives", "batch_size"} <= set(run.data.params)
    assert set(CONTRACT_METRICS) <= set(run.data.metrics)
    assert "wdrec_version" in run.data.tags and "git_commit" in run.data.tags
    assert run.data.tags["registered_model_version"] == "wdrec/1"


def test_run_holds_config_feature_spec_and_plots(run_data) -> None:
    client, run = run_data
    paths = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "plots")
    }
    assert {"config.yaml", "feature_spec.json", "data_summary.json", "plots/training_curves.png", "plots/roc_curve.png"} <= paths
    config = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml")
    assert "wdrec.data.sources.movielens.MovieLens" in config


def test_model_is_registered_as_champion(run_data) -> None:
    client, run = run_data
    champion = client.get_model_version_by_alias("wdrec", "champion")
    assert champion.run_id == run.info.run_id and str(champion.version) == "1"
    assert float(champion.tags["val_ndcg_10"]) > 0


def test_tracking_uri_defaults_to_sqlite_in_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri() == "http://127.0.0.1:5999"


def test_unreachable_tracking_server_fails_before_training() -> None:
    with pytest.raises(RuntimeError, match="unreachable"):
        check_tracking_uri("http://127.0.0.1:9", timeout=2)
