"""Wide&Deep peers on the same PW split, machine, batch and epochs: wdrec and DeepCTR-Torch's WDL,
test AUC, wall time and training samples/s side by side, at each batch size of ``--batch``.

The split is ``configs/movielens100k-ctr.yaml``'s (ratings >= 4 → 1, <= 2 → 0, random
80/10/10, ``data.seed`` 42), written once to Parquet with the raw feature columns (user id,
age, gender, occupation; item id, genres, release year) and the job's statistics of the training
rows (``statistic`` features), which DeepCTR-Torch gets as standardised numbers. Every model
trains on its train rows for the same epochs at the same batch size, with the same hidden layers
(the job's), keeps the epoch with the best validation AUC, and is scored once on the test rows.
Each runs as a fresh process and is timed end to end, from process start (imports, reading the
data, encoding it) to the test AUC. Training samples/s is per epoch, training batches only
(validation left out on both sides), the median over the epochs after the first. With
``--repeats N`` each model runs N times per batch size, alternating which goes first, and the
JSON adds the medians (one wall time moves by ±10% on a shared machine).
The first wdrec run also creates its MLflow store in the scratch folder (2.5 s, once per store).
``wdrec_untracked`` is the same wdrec job with ``--trainer.logger=false``: no MLflow (no import,
no run, no plots), as DeepCTR-Torch tracks nothing; it tells the tracking's share of the wall time.

The peers run in a venv of their own (``--venv``, created on first use: the CPU torch of this
machine, then each peer with pip), never in the project's. A peer that does not install there
is reported with the reason. pytorch-widedeep is not run: beside torch its install resolves 82
packages (torchvision, spacy, transformers, opencv-contrib, gensim; pip's dry run, 2026-12-02).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import REPO_ROOT, write_json  # noqa: E402

CONFIG = REPO_ROOT / "configs" / "movielens100k-ctr.yaml"
AGE_BOUNDARIES = [18, 25, 35, 45, 50, 56]  # as configs/features/movielens100k.yaml buckets age
PEERS = {"deepctr": ["deepctr-torch", "requests"]}  # the peer, and what pip installs for it (it imports requests undeclared)


def write_split(folder: Path) -> tuple[dict[str, int], list[int]]:
    """The PW job's train/val/test rows with raw features, as Parquet in ``folder``; their sizes, and
    the job's hidden layers (the peers train the same shape of MLP)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from wdrec.job import run

    cli = run(["--config", str(CONFIG), "--trainer.logger=false", "--registry.enabled=false"], subcommand=False)
    datamodule = cli.datamodule
    datamodule.prepare_data()
    datamodule.setup("fit")
    statistics = {side: datamodule.feature_spec.statistic_columns(side) for side in ("user", "item")}
    users = datamodule.users_frame[["user_id", "age", "gender", "occupation", *statistics["user"]]]
    items = datamodule.items_frame[["item_id", "genres", "release_year", *statistics["item"]]]
    sizes = {}
    for stage, rows in datamodule.rows.items():
        frame = pd.concat([users.iloc[rows["user"].numpy()].reset_index(drop=True),
                           items.iloc[rows["item"].numpy()].reset_index(drop=True)], axis=1)  # fmt: skip
        frame["label"] = rows["label"].numpy()
        table = pa.Table.from_pandas(frame, preserve_index=False)  # without pandas' metadata: plain types for any reader
        pq.write_table(table.replace_schema_metadata(None), folder / f"{stage}.parquet")
        sizes[stage] = len(frame)
    return sizes, list(cli.model.hparams.architecture["hidden"])


def timed(command: list[str], cwd: Path) -> dict:
    """Run ``command`` (which prints one JSON line last) and add its wall time."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1], "wall_s": round(seconds, 1)}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": round(seconds, 1)}


WDREC_CHILD = """
import json, statistics, sys
sys.path.insert(0, sys.argv[4])  # benchmarks/
from validation_share import EpochTimer
from wdrec.cli import exit_quickly
from wdrec.job import run

timer = EpochTimer()  # training batches per epoch, validation left out
cli = run(["fit", "--config", sys.argv[1], "--registry.enabled=false", "--trainer.enable_progress_bar=false",
           "--trainer.enable_model_summary=false", f"--trainer.max_epochs={sys.argv[2]}", f"--data.batch_size={sys.argv[3]}",
           *sys.argv[5:]], callbacks=[timer])
result = cli.trainer.test(cli.model, cli.datamodule, ckpt_path="best", verbose=False)[0]
rates = [samples / seconds for samples, seconds in zip(timer.samples, timer.train)]
print(json.dumps({"test_auc": result["test_auc"], "epochs": cli.trainer.current_epoch,
                  "train_samples_per_s": round(statistics.median(rates[1:] or rates))}))
exit_quickly()  # as the `wdrec` command ends
"""


def peer_child(data: Path, epochs: int, batch: int, hidden: list[int]) -> None:
    """Run in the peers' venv: DeepCTR-Torch's WDL on the Parquet split; prints one JSON line."""
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.metrics import roc_auc_score

    torch.set_num_threads(torch.get_num_threads())
    frames = {stage: pd.read_parquet(data / f"{stage}.parquet") for stage in ("train", "val", "test")}
    train = frames["train"]
    categorical = ["user_id", "item_id", "gender", "occupation", "age"]
    for frame in frames.values():
        frame["age"] = np.digitize(frame["age"], AGE_BOUNDARIES).astype(str)
        frame["year"] = (frame["release_year"].fillna(train["release_year"].mean()) - train["release_year"].mean()) / train["release_year"].std()
    numbers = [c for c in train.columns if c not in (*categorical, "genres", "release_year", "year", "label")]  # the job's statistics
    scale = {column: (train[column].mean(), train[column].std()) for column in numbers}  # before train's own change
    for frame in frames.values():
        for column, (mean, sd) in scale.items():
            frame[column] = (frame[column] - mean) / sd
    vocab = {c: {v: i + 1 for i, v in enumerate(sorted(train[c].astype(str).unique()))} for c in categorical}  # 0: unseen
    genres = {g: i + 1 for i, g in enumerate(sorted({g for row in train["genres"] for g in row}))}
    max_genres = max(len(row) for frame in frames.values() for row in frame["genres"])

    def inputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
        x = {c: frame[c].astype(str).map(vocab[c]).fillna(0).astype("int64").to_numpy() for c in categorical}
        bags = np.zeros((len(frame), max_genres), dtype="int64")
        for row, values in enumerate(frame["genres"]):
            codes = [genres.get(g, 0) for g in values]
            bags[row, : len(codes)] = codes
        x["genres"], x["year"] = bags, frame["year"].to_numpy("float32")
        x |= {column: frame[column].to_numpy("float32") for column in numbers}
        return x

    x = {stage: inputs(frame) for stage, frame in frames.items()}
    y = {stage: frame["label"].to_numpy("float32") for stage, frame in frames.items()}
    from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat
    from deepctr_torch.models import WDL

    columns = [SparseFeat(c, len(vocab[c]) + 1, embedding_dim=16) for c in categorical]
    columns += [VarLenSparseFeat(SparseFeat("genres", len(genres) + 1, embedding_dim=16), max_genres, combiner="mean"),
                DenseFeat("year", 1), *(DenseFeat(column, 1) for column in numbers)]  # fmt: skip
    torch.manual_seed(0)
    model = WDL(columns, columns, dnn_hidden_units=tuple(hidden), dnn_dropout=0.3, task="binary", device="cpu")
    model.compile("adam", "binary_crossentropy")
    best, state, rates = -1.0, None, []
    for _ in range(epochs):
        started = time.perf_counter()
        model.fit(x["train"], y["train"], batch_size=batch, epochs=1, verbose=0)
        rates.append(len(y["train"]) / (time.perf_counter() - started))
        auc = roc_auc_score(y["val"], model.predict(x["val"], 65536))
        if auc > best:
            best, state = auc, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    print(json.dumps({"test_auc": roc_auc_score(y["test"], model.predict(x["test"], 65536)), "best_val_auc": best,
                      "train_samples_per_s": round(statistics.median(rates[1:] or rates))}))  # fmt: skip


def peer_venv(venv: Path, packages: list[str]) -> str | None:
    """Install ``packages`` into the peers' venv beside the CPU torch; the reason if that fails."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0", "pandas", "pyarrow", "scikit-learn"], check=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0", *packages], capture_output=True, text=True)
    if done.returncode != 0:
        return " ".join(done.stderr.strip().splitlines()[-3:])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="where to write the results")
    parser.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "wdrec" / "peers-venv")
    parser.add_argument("--epochs", type=int, default=8, help="the PW job's max_epochs")
    parser.add_argument("--batch", type=int, nargs="+", default=[512], help="batch sizes, each a run of every model")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every model per batch size, alternating which goes first")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--hidden", type=int, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        peer_child(args.data, args.epochs, args.batch[0], args.hidden)
        return
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        rows, hidden = write_split(folder)
        problems = {name: peer_venv(args.venv, packages) for name, packages in PEERS.items()}
        for batch in args.batch:
            for repeat in range(args.repeats):
                wdrec = [sys.executable, "-c", WDREC_CHILD, str(CONFIG), str(args.epochs), str(batch), str(HERE)]
                commands = {"wdrec": wdrec, "wdrec_untracked": [*wdrec, "--trainer.logger=false"]}
                commands |= {name: [str(args.venv / "bin" / "python"), __file__, "--child", "--data", str(folder),
                                    "--epochs", str(args.epochs), "--batch", str(batch),
                                    "--hidden", *map(str, hidden)] for name in PEERS}  # fmt: skip
                results: dict = {"batch": batch, "repeat": repeat}
                for name in list(commands)[:: 1 if repeat % 2 == 0 else -1]:  # alternate who runs first
                    if problems.get(name):
                        packages = " ".join(PEERS[name])
                        results[name] = {"error": f"pip install {packages} beside torch 2.13.0 (CPU) failed: {problems[name]}"}
                    else:
                        results[name] = timed(commands[name], folder)
                print(json.dumps(results), flush=True)
                runs.append(results)
    write_json(args.json or "benchmarks/results/peers.json",
               {"rows": rows, "epochs": args.epochs, "hidden": hidden, "runs": runs, "medians": medians(runs)}, sys.argv)  # fmt: skip


def medians(runs: list[dict]) -> list[dict]:
    """Per batch size and model, the median of each measure over the repeats."""
    table = []
    for batch in sorted({run["batch"] for run in runs}):
        at = [run for run in runs if run["batch"] == batch]
        row: dict = {"batch": batch, "repeats": len(at)}
        for name in ("wdrec", "wdrec_untracked", *PEERS):
            done = [run[name] for run in at if "error" not in run[name]]
            row[name] = {key: round(statistics.median(r[key] for r in done), 4)
                         for key in ("test_auc", "wall_s", "train_samples_per_s")} if done else None  # fmt: skip
        table.append(row)
    return table


if __name__ == "__main__":
    main()
