"""Quality on MovieLens-100k, Wide&Deep beside its baselines on the same splits, in one run.

- ``l1o``: leave-one-out, full ranking of every item the user has not interacted with
  (train, and for test also the validation item): HR@10, NDCG@10, Recall@10 on the test
  item, under each tie rule of ``--tie-breaks`` (``data.tie_break``: which of a user's
  interactions in the same last second is held out). Baselines on each: popularity; EASE
  (Steck, 2019), a strong non-neural item-item model, with its L2 strength chosen on the
  validation items.
- ``pw``: ratings >= 4 → 1, <= 2 → 0, random 80/10/10 split: test AUC and logloss.
  Baseline: logistic regression over one-hot user and item (scikit-learn), its C chosen
  on the validation rows from a grid wide enough that neither end is chosen.
- ``rating``: test RMSE and MAE beside global mean + user and item biases (ridge, λ chosen
  on validation).
- ``default_job``: the default job as a user runs it, ``wdrec fit --config
  configs/movielens100k.yaml`` in a fresh process and a fresh folder (MLflow tracking into a new
  store, registration included), timed end to end.

L1O (under each tie rule), PW and rating run once per seed of ``--seeds`` (``data.seed`` and
``seed_everything``: the split, where the rule or the protocol draws it, and the training) and
report each model's mean and sample standard deviation over them, with every run.

Wide&Deep is trained by the real CLI (``wdrec fit --config ...``), model selection on
validation as the config says, then ``wdrec test`` on the best checkpoint. The test split is
read once per run, for the figure reported.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, write_json  # noqa: E402

from wdrec.job import run  # noqa: E402
from wdrec.training.baselines import BIAS_STRENGTHS, Biases, errors, ranking_metrics  # noqa: E402

CONFIGS = REPO_ROOT / "configs"
SECTIONS = ["l1o", "pw", "rating", "default_job"]
LOGREG_C = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # inverse L2 strength, chosen on validation


def fit_and_test(config: Path, extra: list[str]) -> tuple[dict[str, float], object]:
    """Train with the CLI in a scratch directory, then test the best checkpoint. The results hold
    the test metrics and the validation figure that selected the checkpoint (``val_auc``, ...),
    the one a config's comments may quote."""
    with tempfile.TemporaryDirectory() as workdir, contextlib.chdir(workdir):
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir}/mlflow.db"
        cli = run(["fit", "--config", str(config), "--registry.enabled=false", "--trainer.enable_progress_bar=false", *extra])
        results = cli.trainer.test(cli.model, cli.datamodule, ckpt_path="best", verbose=False)[0]
        selection = cli.trainer.checkpoint_callback
        results[selection.monitor] = selection.best_model_score
    return {k: float(v) for k, v in results.items()}, cli.datamodule


# ---------------------------------------------------------------------------- L1O
def ranking(datamodule, stage: str, score_block) -> dict[str, float]:  # noqa: ANN001
    """Full-ranking metrics with the data module's own masks; ``score_block(users) -> (U, N)``."""
    return {name: round(value, 4) for name, value in ranking_metrics(datamodule, stage, score_block).items()}


def l1o(extra: list[str]) -> dict[str, dict[str, float]]:
    """One L1O run: wdrec, popularity and EASE on the same split (``extra`` picks the tie rule)."""
    wdrec, datamodule = fit_and_test(CONFIGS / "movielens100k.yaml", extra)
    # Fitted on train; at test time every model also sees the validation interaction as input.
    train, known = interaction_matrix(datamodule, "train"), interaction_matrix(datamodule, "train", "val")
    results = {
        "wdrec": {k.removeprefix("test_"): round(v, 4) for k, v in wdrec.items() if k.endswith("_10")},  # and val_ndcg_10, the selecting figure
        "popularity": ranking(datamodule, "test", lambda users: known.sum(0).expand(len(users), -1)),
    }
    best = max(
        ((lam, ease(train, lam)) for lam in (50.0, 100.0, 250.0, 500.0, 1000.0)),
        key=lambda pair: ranking(datamodule, "val", lambda users, b=pair[1]: train[users] @ b)["ndcg_10"],
    )
    results["ease"] = {**ranking(datamodule, "test", lambda users: known[users] @ best[1]), "lambda": best[0]}
    return results


def interaction_matrix(datamodule, *stages: str) -> torch.Tensor:  # noqa: ANN001
    matrix = torch.zeros((len(datamodule.users_frame), datamodule.num_items))
    for stage in stages:
        matrix[datamodule.rows[stage]["user"], datamodule.rows[stage]["item"]] = 1.0
    return matrix


def ease(interactions: torch.Tensor, lam: float) -> torch.Tensor:
    """EASE's closed form: B = I - P / diag(P), P = (XᵀX + λI)⁻¹, zero diagonal."""
    gram = interactions.T @ interactions + lam * torch.eye(interactions.shape[1])
    precision = torch.linalg.inv(gram)
    weights = -precision / torch.diag(precision)
    weights.fill_diagonal_(0.0)
    return weights


# ----------------------------------------------------------------------------- PW
def pw(extra: list[str]) -> dict[str, dict[str, float]]:
    wdrec, datamodule = fit_and_test(CONFIGS / "movielens100k-ctr.yaml", extra)
    n_users, n_items = len(datamodule.users_frame), datamodule.num_items

    def one_hot(rows: dict[str, torch.Tensor]) -> sp.csr_matrix:
        n = len(rows["user"])
        columns = np.concatenate([rows["user"].numpy(), n_users + rows["item"].numpy()])
        return sp.csr_matrix((np.ones(2 * n), (np.tile(np.arange(n), 2), columns)), shape=(n, n_users + n_items))

    x = {stage: one_hot(datamodule.rows[stage]) for stage in ("train", "val", "test")}
    y = {stage: datamodule.rows[stage]["label"].numpy() for stage in ("train", "val", "test")}
    models = [LogisticRegression(C=c, max_iter=5000).fit(x["train"], y["train"]) for c in LOGREG_C]
    best = max(models, key=lambda m: roc_auc_score(y["val"], m.predict_proba(x["val"])[:, 1]))
    probability = best.predict_proba(x["test"])[:, 1]
    return {
        "wdrec": {"auc": round(wdrec["test_auc"], 4), "logloss": round(wdrec["test_logloss"], 4), "val_auc": round(wdrec["val_auc"], 4)},
        "logreg": {"auc": round(roc_auc_score(y["test"], probability), 4),
                   "logloss": round(log_loss(y["test"], probability), 4), "C": best.C},
    }  # fmt: skip


# ------------------------------------------------------------------------- rating
def rating(extra: list[str]) -> dict[str, dict[str, float]]:
    wdrec, datamodule = fit_and_test(CONFIGS / "movielens100k-rating.yaml", extra)
    rows = datamodule.rows

    train = [rows["train"][key].numpy() for key in ("user", "item", "label")]
    fits = [Biases.fit(*train, len(datamodule.users_frame), datamodule.num_items, lam) for lam in BIAS_STRENGTHS]

    def scores(fit: Biases, stage: str) -> dict[str, float]:
        predicted = fit.predict(rows[stage]["user"].numpy(), rows[stage]["item"].numpy())
        return {name: round(value, 4) for name, value in errors(predicted, rows[stage]["label"].numpy()).items()}

    best = min(fits, key=lambda fit: scores(fit, "val")["rmse"])
    return {
        "wdrec": {"rmse": round(wdrec["test_rmse"], 4), "mae": round(wdrec["test_mae"], 4), "val_rmse": round(wdrec["val_rmse"], 4)},
        "bias": scores(best, "test"),
    }


# -------------------------------------------------------------------- default job
def default_job() -> dict[str, float]:
    """``wdrec fit --config configs/movielens100k.yaml`` as the README runs it, its wall time with
    process start, tracking and registration; the data already cached, as after a first run."""
    command = [str(Path(sys.executable).with_name("wdrec")), "fit", "--config", str(CONFIGS / "movielens100k.yaml")]
    with tempfile.TemporaryDirectory() as workdir:
        store = f"sqlite:///{workdir}/mlflow.db"
        started = time.perf_counter()
        done = subprocess.run(command, cwd=workdir, env={**os.environ, "MLFLOW_TRACKING_URI": store}, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed (exit status {done.returncode}):\n{done.stderr[-3000:]}")
        client = MlflowClient(store)
        (version,) = client.search_model_versions("name='wdrec'")
        history = client.get_metric_history(version.run_id, "val_ndcg_10")
    return {"wall_s": round(seconds, 1), "epochs": len(history), "best_val_ndcg_10": round(max(m.value for m in history), 4)}


def spread(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and metric, the mean and sample standard deviation over the runs."""
    return {
        model: {metric: {"mean": round(float(np.mean(values)), 4), "sd": round(float(np.std(values, ddof=1)), 4) if len(values) > 1 else 0.0}
                for metric in runs[0][model] if metric not in ("C", "lambda")
                for values in [[run[model][metric] for run in runs]]}
        for model in runs[0]
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only these sections")
    parser.add_argument("--tie-breaks", nargs="+", default=["random", "item_id", "log_order"], help="L1O tie rules")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="seeds of the L1O, PW and rating runs")
    parser.add_argument(
        "--fit-args", nargs=argparse.REMAINDER, default=[], help="last: the rest of the line, `wdrec fit` overrides for every job"
    )
    args = parser.parse_args()
    wanted = set(args.only or SECTIONS)

    def over_seeds(section, extra: list[str]) -> dict[str, object]:  # noqa: ANN001
        runs = [section([f"--data.seed={seed}", f"--seed_everything={seed}", *extra, *args.fit_args]) for seed in args.seeds]
        return {"seeds": args.seeds, **spread(runs), "runs": runs}

    results: dict[str, object] = {}
    if "l1o" in wanted:
        results["l1o"] = {rule: over_seeds(l1o, [f"--data.tie_break={rule}"]) for rule in args.tie_breaks}
    for name, section in (("pw", pw), ("rating", rating)):
        if name in wanted:
            results[name] = over_seeds(section, [])
    if "default_job" in wanted:
        results["default_job"] = default_job()
    write_json(args.json, results, sys.argv)


if __name__ == "__main__":
    main()
