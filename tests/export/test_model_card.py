"""Model cards: every registered version describes its data, features, metrics beside baselines,
training time, hardware, config and code (MLflow version description, run artifact, bundle)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from paths import REPO_ROOT

from wdrec.data.features import Cross, FeatureSpec, Field
from wdrec.data.schema import STRING_LIST
from wdrec.export.model_card import CARD_FILE, MAX_DESCRIPTION, ModelCard, render
from wdrec.model.widedeep import WideDeepConfig
from wdrec.training.baselines import baselines
from wdrec.training.metrics import Selection


@pytest.fixture(scope="module")
def registered(trained_run) -> tuple[MlflowClient, str]:
    """The client of the trained run's store and version 1's description."""
    client = MlflowClient(trained_run.tracking_uri)
    return client, client.get_model_version("wdrec", "1").description


def test_the_registered_version_describes_its_data_and_features(trained_run, registered) -> None:
    _, card = registered
    datamodule = trained_run.cli.datamodule
    assert card.startswith("# wdrec: model card") and len(card) <= MAX_DESCRIPTION
    assert "MovieLens-100k" in card and "`l1o` (leave-one-out)" in card
    assert "Ties: interactions in the same second are ordered at random (seeded by data.seed, 42)" in card
    rows = " · ".join(f"{name} {len(frame):,}" for name, frame in datamodule.splits.items())
    assert f"**Rows:** {rows} (943 users, 1,682 catalogue items)" in card
    assert f"implicit: every interaction is a positive; {datamodule.negatives} negatives per positive" in card
    for fld in datamodule.feature_spec.fields:
        assert f"| {fld.name} | {fld.side} |" in card
    assert "| user_id | user | categorical | 943 | yes | embedding " in card
    assert "| history | user | history (last 50) | " in card and "| yes | no |" in card  # wide only
    assert "recent × item_id (1,000,003 weights)" in card


def test_the_card_puts_the_logged_validation_metrics_beside_baselines_on_the_same_split(trained_run, registered) -> None:
    client, card = registered
    logged = client.get_metric_history(trained_run.run_id, "val_ndcg_10")[-1].value  # one epoch: the best is the last
    found, why = baselines(trained_run.cli.datamodule, "val")
    assert why is None
    popularity = found["popularity"]
    row = f"| val_ndcg_10 (selection) | {logged:.4f} | {popularity['ndcg_10']:.4f} |"
    assert row in card, card
    assert "| metric | wdrec | popularity |" in card and "after epoch 1 (the registered weights)" in card
    assert f"| val_hr_10 | {client.get_metric_history(trained_run.run_id, 'val_hr_10')[-1].value:.4f} | " in card
    assert 0 < popularity["ndcg_10"] < 0.2 and 0.5 < popularity["auc"] < 1  # popularity is a real, weak ranker
    assert "Test: not measured" in card  # `wdrec fit` runs no test


def test_the_card_records_training_time_hardware_and_code(trained_run, registered) -> None:
    client, card = registered
    seconds = float(re.search(r"\*\*Time:\*\* ([\d,.]+) s wall-clock", card).group(1).replace(",", ""))
    assert 0 < seconds < 600
    assert "Accelerator CPU × 1" in card and "Precision 32-true" in card and "logical cores" in card
    commit = re.search(r"\*\*Code:\*\* commit `([0-9a-f]{40})`", card).group(1)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    # The code of this checkout: HEAD itself, unless someone committed since the session's fit.
    ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=REPO_ROOT)
    assert commit == head.stdout.strip() or ancestor.returncode == 0
    assert client.get_run(trained_run.run_id).data.tags["git_commit"] == commit


def test_the_whole_card_is_a_run_artifact_and_in_the_bundle(trained_run, registered, tmp_path) -> None:
    client, description = registered
    path = client.download_artifacts(trained_run.run_id, CARD_FILE, str(tmp_path))
    card = Path(path).read_text(encoding="utf-8")
    assert card == (trained_run.bundle / CARD_FILE).read_text(encoding="utf-8")
    config = card.split("```yaml\n", 1)[1].split("```", 1)[0]
    resolved = yaml.safe_load(config)
    assert resolved["data"]["init_args"]["split"] == "l1o" and resolved["trainer"]["max_epochs"] == 1
    assert "last_checkpoint" in resolved  # the description may leave sections out; the artifact keeps them
    assert description.split("## Training")[0] == card.split("## Training")[0]


# ------------------------------------------------------------------ the renderer
def small_card(**changes: object) -> ModelCard:
    users = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "age": [20.0, 35.0, 61.0]})
    items = pd.DataFrame({"item_id": ["a", "b"], "genres": pd.Series([["Drama"], ["Comedy", "Drama"]], dtype=STRING_LIST)})
    fields = [Field("user_id", "user"), Field("age", "user", kind="numeric"), Field("item_id", "item", embedding_dim=8),
              Field("genres", "item", kind="multi_hot", deep=False)]  # fmt: skip
    train = users[["user_id"]].merge(items[["item_id"]], how="cross")
    spec = FeatureSpec.fit(fields, [Cross(["user_id", "genres"])], train, users, items)
    card = ModelCard(
        name="wdrec", run_id="0123abcd", target="implicit",
        data={"Source": "synthetic", "Split": "`l1o`", "Target": "implicit", "Rows": "train 6 · val 3 · test 3"},
        spec=spec, network=WideDeepConfig.from_layout(spec.layout()), selection=Selection("val_ndcg_10", "max"),
        validation={"val_auc": 0.81234, "val_ndcg_10": 0.05678}, epoch=2,
        baselines={"popularity": {"auc": 0.7, "ndcg_10": 0.03}}, training_seconds=1234.56,
        hardware={"CPU": "Test CPU (2 logical cores)", "Accelerator": "CPU × 1", "Precision": "32-true"},
        config_yaml="seed_everything: 42\nmodel:\n  dropout: 0.2\n  scheduler: null\n", commit=None,
    )  # fmt: skip
    for key, value in changes.items():
        setattr(card, key, value)
    return card


def test_render_writes_features_metrics_and_provenance() -> None:
    card = render(small_card())
    assert "| user_id | user | categorical | 3 | yes | embedding 8 |" in card  # 6 · 4^¼ (OOV counted) ≈ 8
    assert "| age | user | numeric, standardize | — | no | dense value |" in card
    assert "| item_id | item | categorical | 2 | yes | embedding 8 |" in card
    assert "| genres | item | multi_hot | 2 | yes | no |" in card
    assert "**Crosses (wide part):** user_id × genres (6 weights)." in card
    lines = card.splitlines()
    selection = lines.index("| val_ndcg_10 (selection) | 0.0568 | 0.0300 |")
    assert lines[selection + 1] == "| val_auc | 0.8123 | 0.7000 |"  # the selection metric leads
    assert "after epoch 3 (the registered weights)" in card
    assert "**Time:** 1,234.6 s wall-clock" in card
    assert "**Code:** unknown (not run from a git checkout)" in card
    assert "```yaml\nseed_everything: 42\nmodel: {dropout: 0.2}\n```" in card  # unset values left out


def test_render_keeps_the_description_within_mlflows_limit() -> None:
    sections = {f"section_{i}": {f"key_{j}": "value " * 10 for j in range(20)} for i in range(6)}
    config = yaml.safe_dump({"seed_everything": 42, "model": {"dropout": 0.2}, **sections}, sort_keys=False)
    card = small_card(config_yaml=config, commit="f" * 40, dirty=True)
    full, short = render(card), render(card, MAX_DESCRIPTION)
    assert len(full) > MAX_DESCRIPTION >= len(short)
    assert "section_5" in full and "Sections not shown" not in full
    assert "seed_everything: 42\nmodel: {dropout: 0.2}" in short  # the important sections stay, whole
    assert "Sections not shown (description size limit): section_" in short and "run artifact `config.yaml`" in short
    assert "commit `" + "f" * 40 + "`, dirty" in short
    many = small_card(baselines_note="none here", validation={f"val_metric_{i}": 0.5 for i in range(400)})
    cut = render(many, MAX_DESCRIPTION)
    assert len(cut) <= MAX_DESCRIPTION and cut.endswith(f"the whole card is the run artifact `{CARD_FILE}`.\n")
