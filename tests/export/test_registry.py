"""The registry: pyfunc model equal to the module, the champion alias rule, wdrec-export."""

from __future__ import annotations

import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest
from commands import SHORT_FIT
from mlflow import MlflowClient

from wdrec.export.bundle import read_bundle
from wdrec.export.cli import main as export_main
from wdrec.export.registry import champion_version, register, resolve_bundle
from wdrec.export.scorer import Scorer


@pytest.fixture()
def tracking(trained_run, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_run.tracking_uri)
    mlflow.set_tracking_uri(trained_run.tracking_uri)
    return MlflowClient(trained_run.tracking_uri)


def test_pyfunc_model_scores_pairs_in_order_like_the_bundle(trained_run, tracking) -> None:
    model = mlflow.pyfunc.load_model("models:/wdrec@champion")
    frame = pd.DataFrame({"user_id": ["196", "186", "999999", "196"], "item_id": ["242", "302", "1", "1"]})
    predicted = np.asarray(model.predict(frame))
    expected = Scorer(read_bundle(trained_run.bundle)).score_pairs(frame["user_id"].tolist(), frame["item_id"].tolist())
    np.testing.assert_allclose(predicted, expected, atol=1e-6)
    assert ((predicted > 0) & (predicted < 1)).all()


def test_champion_moves_only_to_a_better_version(trained_run, tracking) -> None:
    source = tracking.get_model_version("wdrec", "1").source
    name = "alias-rule"
    first = register(source, name, "val_ndcg_10", 0.05, "max", "implicit", client=tracking)
    worse = register(source, name, "val_ndcg_10", 0.04, "max", "implicit", client=tracking)
    better = register(source, name, "val_ndcg_10", 0.06, "max", "implicit", client=tracking)
    assert first.promoted and not worse.promoted and better.promoted
    assert str(champion_version(tracking, name).version) == better.version
    lower_is_better = register(source, "alias-rule-min", "val_rmse", 0.9, "min", "rating", client=tracking)
    higher = register(source, "alias-rule-min", "val_rmse", 0.95, "min", "rating", client=tracking)
    assert lower_is_better.promoted and not higher.promoted


def test_champion_never_moves_across_tasks_or_selection_metrics(trained_run, tracking) -> None:
    source = tracking.get_model_version("wdrec", "1").source
    name = "task-rule"
    ranking = register(source, name, "val_ndcg_10", 0.05, "max", "implicit", client=tracking)
    rating = register(source, name, "val_rmse", 0.5, "min", "rating", client=tracking)
    other_metric = register(source, name, "val_auc", 0.9, "max", "implicit", client=tracking)
    assert ranking.promoted and not rating.promoted and not other_metric.promoted
    assert "rating-task model selected on val_rmse" in rating.refused and "registry.name" in rating.refused
    assert "selected on val_auc" in other_metric.refused
    assert str(champion_version(tracking, name).version) == ranking.version
    assert tracking.get_model_version(name, rating.version).tags["wdrec.task"] == "rating"


def test_a_champion_from_before_task_tags_is_not_taken_by_another_task(trained_run, tracking) -> None:
    """Such a champion carries only ``{metric: value}``: a challenger selected on another metric
    once found nothing to compare and took the alias."""
    first = tracking.get_model_version("wdrec", "1")
    legacy = mlflow.register_model(first.source, "legacy-tags", tags={"val_ndcg_10": "0.05"})
    tracking.set_registered_model_alias("legacy-tags", "champion", legacy.version)
    rating = register(first.source, "legacy-tags", "val_rmse", 0.9, "min", "rating", client=tracking)
    assert not rating.promoted and "selected on val_ndcg_10" in rating.refused
    assert str(champion_version(tracking, "legacy-tags").version) == str(legacy.version)


def test_each_task_registers_under_its_own_name(trained_run, tmp_path, monkeypatch) -> None:
    """The default job, then the rating job, into one store: the ranking model stays ``wdrec@champion``."""
    from paths import CONFIGS

    from wdrec.job import run

    store = tmp_path / "mlflow.db"
    shutil.copy(trained_run.tracking_uri.removeprefix("sqlite:///"), store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.chdir(tmp_path)
    run(["fit", "--config", str(CONFIGS / "movielens100k-rating.yaml"), *SHORT_FIT])
    client = MlflowClient(f"sqlite:///{store}")
    assert champion_version(client, "wdrec").run_id == trained_run.run_id
    rating = champion_version(client, "wdrec-rating")
    assert rating is not None and rating.tags["wdrec.task"] == "rating" and rating.tags["wdrec.selection_metric"] == "val_rmse"
    assert [str(v.version) for v in client.search_model_versions("name='wdrec'")] == ["1"]


def test_registry_uri_resolves_to_the_logged_bundle(trained_run, tracking) -> None:
    path, info = resolve_bundle("models:/wdrec@champion")
    assert info == {"name": "wdrec", "version": "1", "run_id": trained_run.run_id}
    assert read_bundle(path).metadata["run_id"] == trained_run.run_id


def test_wdrec_export_turns_a_checkpoint_into_the_same_bundle(trained_run, tmp_path) -> None:
    best = next(trained_run.checkpoint_dir.glob("best-*.ckpt"))
    export_main([str(best), "--output", str(tmp_path / "bundle")])
    exported, fitted = read_bundle(tmp_path / "bundle"), read_bundle(trained_run.bundle)
    assert exported.spec == fitted.spec
    users, items = ["196", "186", "22"], ["242", "302", "377"]
    np.testing.assert_allclose(Scorer(exported).score_pairs(users, items), Scorer(fitted).score_pairs(users, items), atol=1e-6)


def test_wdrec_export_refuses_a_file_that_is_not_a_checkpoint(tmp_path) -> None:
    bogus = tmp_path / "x.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="wdrec-export"):
        export_main([str(bogus), "--output", str(tmp_path / "out")])
