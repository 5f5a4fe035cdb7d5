"""Your own files, end to end through the real entry points: ``wdrec fit`` trains on them and
registers the model, ``wdrec-serve`` serves it, ``/v1/recommend`` answers over HTTP.

The files are MovieLens-100k rewritten the way users export their own logs: their own column
names, CSV or Parquet (written in several row groups, so Arrow columns arrive chunked), with
and without users/items tables, split by the user into train/val/test files or left whole,
multi-valued columns as separated text or as Parquet lists, timestamps as epoch seconds or
ISO dates. The cases are pairwise, not the full product: every value of every dimension
appears in some case, and ``csv-presplit-sides`` is the combination that once crashed
(chunked columns in ``build_users_frame``). That case runs in the default suite; the others,
each a fit and a server start of 30-60 s on two cores, run as ``slow``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from commands import main_in_process, wdrec
from mlflow import MlflowClient
from servers import running_server, serve_env

from wdrec.data.schema import InteractionData

ROW_GROUP = 4_000  # Parquet row group size: every interactions file has several
FIT = {"max_epochs": 1, "limit_train_batches": 20, "limit_val_batches": 3, "enable_progress_bar": False}


@dataclass(frozen=True)
class Case:
    name: str
    fmt: Literal["csv", "parquet"]
    sides: bool  # users and items tables
    presplit: bool  # train/val/test files instead of one interactions file
    dates: Literal["epoch", "iso"]
    target: Literal["binary", "implicit"]
    lists: Literal["text", "parquet"] = "text"  # how items.genres is stored

    @property
    def registered_name(self) -> str:
        return "wdrec-ctr" if self.target == "binary" else "wdrec"


# What `wdrec fit` never prints: Lightning's warning against mixing args and the command line (the
# command line is what wdrec passes), a torch deprecation inside Lightning, Lightning's advert for its
# cloud logger, and MLflow's progress bar over the few small files that registering reads back.
NOT_FOR_USERS = ("LightningCLI's args parameter", "LeafSpec", "💡", "Downloading artifacts")

CASES = [
    Case("csv-presplit-sides", "csv", sides=True, presplit=True, dates="epoch", target="binary"),
    Case("parquet-presplit-sides-lists", "parquet", sides=True, presplit=True, dates="iso", target="implicit", lists="parquet"),
    Case("csv-whole-plain", "csv", sides=False, presplit=False, dates="iso", target="implicit"),
    Case("parquet-presplit-plain", "parquet", sides=False, presplit=True, dates="epoch", target="binary"),
    Case("csv-whole-sides", "csv", sides=True, presplit=False, dates="iso", target="binary"),
    Case("parquet-whole-sides-text", "parquet", sides=True, presplit=False, dates="epoch", target="implicit"),
]
DEFAULT_SUITE = {"csv-presplit-sides"}


def write_files(case: Case, data: InteractionData, folder: Path) -> dict[str, object]:
    """Write the case's files under the user's own column names; return the Files source's init_args."""
    folder.mkdir(parents=True, exist_ok=True)
    log = data.interactions
    if case.target == "binary":  # the PW protocol's labels, as a click log would carry them
        log = log[(log["rating"] >= 4) | (log["rating"] <= 2)].assign(clicked=lambda f: (f["rating"] >= 4).astype(int))
    when = pd.to_datetime(log["timestamp"], unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S") if case.dates == "iso" else log["timestamp"]
    log = pd.DataFrame({"customer": log["user_id"], "sku": log["item_id"], "when": when.to_numpy(),
                        **({"clicked": log["clicked"]} if case.target == "binary" else {})})  # fmt: skip
    args: dict[str, object] = {"user_column": "customer", "item_column": "sku", "timestamp_column": "when"}
    if case.target == "binary":
        args["label_column"] = "clicked"
    if case.presplit:
        order = np.random.default_rng(7).permutation(len(log))
        cuts = np.split(order, [int(0.8 * len(log)), int(0.9 * len(log))])
        for split, rows in zip(("train", "val", "test"), cuts, strict=True):
            args[split] = save(log.iloc[np.sort(rows)], folder / f"{split}.{case.fmt}")
    else:
        args["interactions"] = save(log, folder / f"interactions.{case.fmt}")
    if case.sides:
        users = data.users[["user_id", "age", "gender", "occupation"]].rename(columns={"user_id": "customer"})
        items = data.items[["item_id", "release_year"]].rename(columns={"item_id": "sku"})
        genres = data.items["genres"].map(list)
        items["genres"] = genres if case.lists == "parquet" else genres.map(" ".join)
        args["users"] = save(users, folder / f"users.{case.fmt}")
        args["items"] = save(items, folder / f"items.{case.fmt}")
        if case.lists == "text":
            args["multi_valued"] = {"genres": " "}
    return args


def save(frame: pd.DataFrame, path: Path) -> str:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False, row_group_size=ROW_GROUP)
    return str(path)


def write_config(case: Case, source: dict[str, object], folder: Path) -> Path:
    """A whole job config, as a user writes one for their files: no ``split`` when the files carry one."""
    features = [{"name": "user_id", "side": "user"}, {"name": "item_id", "side": "item"}]
    crosses: list[dict[str, object]] = []
    if case.target == "implicit":
        features.append({"name": "history", "side": "user", "kind": "history", "max_length": 20, "deep": False})
        crosses.append({"fields": ["history", "item_id"]})
    if case.target == "binary":  # target statistics: stored in the bundle's tables, served to known users
        features += [{"name": "user_clicks", "side": "user", "kind": "numeric", "statistic": "count"},
                     {"name": "user_click_rate", "side": "user", "kind": "numeric", "statistic": "label_mean"},
                     {"name": "item_click_rate", "side": "item", "kind": "numeric", "statistic": "label_mean"},
                     {"name": "item_clicked_when", "side": "item", "kind": "numeric", "statistic": "mean_time"}]  # fmt: skip
    if case.sides:
        features += [
            {"name": "age", "side": "user", "kind": "numeric", "transform": "bucketize", "boundaries": [18, 25, 35, 45, 56]},
            {"name": "occupation", "side": "user"},
            {"name": "genres", "side": "item", "kind": "multi_hot"},
            {"name": "release_year", "side": "item", "kind": "numeric"},
        ]
        crosses.append({"fields": ["occupation", "genres"]})
    data: dict[str, object] = {"source": {"class_path": "wdrec.data.sources.files.Files", "init_args": source},
                               "target": case.target, "batch_size": 512, "features": features, "crosses": crosses,
                               "ranking_max_users": 200}  # fmt: skip
    if not case.presplit and case.target == "binary":
        data["split"] = "random"
    config: dict[str, object] = {"seed_everything": 42, "trainer": FIT, "model": {"architecture": {"hidden": [64, 32]}}, "data": data}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.name, marks=() if c.name in DEFAULT_SUITE else pytest.mark.slow) for c in CASES]
)
def test_own_files_train_register_and_serve(case: Case, movielens_100k: InteractionData, tmp_path: Path) -> None:
    config = write_config(case, write_files(case, movielens_100k, tmp_path / "files"), tmp_path)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fit = subprocess.run([*wdrec(), "fit", "--config", str(config)], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "MLFLOW_TRACKING_URI": tracking}, timeout=600)  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-4000:]
    assert not [line for line in fit.stderr.splitlines() if any(noise in line for noise in NOT_FOR_USERS)]

    registry = MlflowClient(tracking)
    champion = registry.get_model_version_by_alias(case.registered_name, "champion")
    run = registry.get_run(champion.run_id)
    assert run.data.params["split"] == ("predefined" if case.presplit else "random" if case.target == "binary" else "l1o")
    assert run.data.params["target"] == case.target

    args = ["--model", f"models:/{case.registered_name}@champion"]
    with running_server(args, serve_env(tracking), tmp_path) as server:
        answer = httpx.post(f"{server.url}/v1/recommend", json={"user_id": "196", "k": 5}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["items"]) == 5 and not body["cold_start"] and body["model_version"] == str(champion.version)
        scores = [item["score"] for item in body["items"]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        if case.target == "binary":  # statistics feed the model; they are neither item content nor request input
            counted = {"item_click_rate", "item_clicked_when"}
            assert not counted & {key for item in body["items"] for key in item}, body["items"][0]
            assert not {"user_clicks", "user_click_rate"} & set(httpx.get(f"{server.url}/v1/model", timeout=30).json()["cold_start_features"])
            refused = httpx.post(f"{server.url}/v1/recommend", json={"user_id": "196", "filters": {"item_click_rate": 0.5}}, timeout=30)
            assert refused.status_code == 422 and "filters.item_click_rate" in refused.text, refused.text
            refused = httpx.post(f"{server.url}/v1/recommend", json={"user_id": "new", "user_features": {"user_clicks": 3}}, timeout=30)
            assert refused.status_code == 422 and "user_features" in refused.text, refused.text
        if case.sides:  # a user the files never mention, described by the users table's columns
            cold = {"user_id": "new-customer", "k": 3, "user_features": {"age": 30, "occupation": "writer"}}
            answer = httpx.post(f"{server.url}/v1/recommend", json=cold, timeout=30)
            assert answer.status_code == 200 and answer.json()["cold_start"], answer.text


# --- a ready-made split is the user's; another split is refused, not applied silently ------------
@pytest.fixture(scope="module")
def presplit_files(movielens_100k: InteractionData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    case = next(c for c in CASES if c.name == "csv-presplit-sides")
    return write_files(case, movielens_100k, tmp_path_factory.mktemp("presplit"))


def test_a_conflicting_split_is_refused_in_one_line(presplit_files: dict[str, object], tmp_path: Path) -> None:
    """The shipped CTR config says ``split: random``; with train/val/test files that would put the
    user's test rows into training."""
    from paths import CONFIGS

    source = {"class_path": "wdrec.data.sources.files.Files", "init_args": presplit_files}
    (tmp_path / "files.yaml").write_text(yaml.safe_dump({"data": {"source": source}}))
    argv = ["fit", "--config", str(CONFIGS / "movielens100k-ctr.yaml"), "--config", str(tmp_path / "files.yaml")]
    code, _, stderr = main_in_process(argv, {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}, tmp_path)
    lines = stderr.strip().splitlines()
    assert code == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[-1].startswith("wdrec: data.split is 'random'") and "--data.split predefined" in lines[-1], lines[-1]
    assert not (tmp_path / "checkpoints").exists()
