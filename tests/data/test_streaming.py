"""StreamingDataModule: Parquet read row group by row group; one-pass FeatureSpec; shards; bad input."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from wdrec.data.batches import TrainingPlan
from wdrec.data.datamodule import InteractionDataModule
from wdrec.data.features import Cross, FeatureSpec, Field
from wdrec.data.io import write_parquet
from wdrec.data.schema import ITEM_ID, LABEL, USER_ID, DataError
from wdrec.data.sources.synthetic import Synthetic
from wdrec.data.splits import with_target
from wdrec.data.streaming import StreamingBatches, StreamingDataModule
from wdrec.model.widedeep import Architecture
from wdrec.training.module import WideDeepModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SOURCE = {"n_users": 200, "n_items": 150, "n_interactions": 4000, "seed": 3}
FILE_ROWS = (1700, 1300, 1000)  # three files of uneven row groups
ROW_GROUP = 300


def features() -> tuple[list[Field], list[Cross]]:
    fields = [
        Field("user_id", "user"),
        Field("age", "user", kind="numeric", transform="bucketize", num_buckets=5),
        Field("occupation", "user", min_count=8),
        Field("item_id", "item"),
        Field("category", "item", min_count=3),
        Field("tags", "item", kind="multi_hot", max_length=3),
        Field("release_year", "item", kind="numeric"),
    ]
    return fields, [Cross(["occupation", "category"]), Cross(["age", "tags"], num_buckets=50)]


@pytest.fixture(scope="module")
def tables():
    return Synthetic(**SOURCE).load(Path("."))


@pytest.fixture(scope="module")
def files(tmp_path_factory, tables) -> dict[str, Path]:
    """The synthetic log as three Parquet files of several row groups, plus the entity tables."""
    root = tmp_path_factory.mktemp("streaming")
    (root / "log").mkdir()
    log = tables.interactions
    ends = np.cumsum(FILE_ROWS)
    for k, (start, end) in enumerate(zip(ends - FILE_ROWS, ends, strict=True)):
        table = pa.Table.from_pandas(log.iloc[start:end], preserve_index=False)
        pq.write_table(table, root / "log" / f"part-{k}.parquet", row_group_size=ROW_GROUP)
    write_parquet(tables.users, root / "users.parquet")
    write_parquet(tables.items, root / "items.parquet")
    pq.write_table(pa.Table.from_pandas(log.sample(400, random_state=0), preserve_index=False), root / "val.parquet")
    return {"root": root, "log": root / "log", "users": root / "users.parquet", "items": root / "items.parquet",
            "val": root / "val.parquet"}  # fmt: skip


def module(files, **kwargs) -> StreamingDataModule:
    fields, crosses = features()
    arguments = {"users": str(files["users"]), "items": str(files["items"]), "features": fields, "crosses": crosses,
                 "batch_size": 250, "shuffle_buffer": 500, **kwargs}  # fmt: skip
    dm = StreamingDataModule(str(files["log"]), **arguments)
    dm.setup("fit")
    return dm


def pairs(batches) -> list[tuple[int, int]]:
    """(user row, item row) of each row of batches without sampled negatives, in order."""
    return [pair for batch in batches for pair in zip(batch["user"].tolist(), batch["item"].tolist(), strict=True)]


def every_row(dm: StreamingDataModule, log: pd.DataFrame) -> list[tuple[int, int]]:
    return list(zip(dm._user_row.get_indexer(log[USER_ID]).tolist(), dm._item_row.get_indexer(log[ITEM_ID]).tolist(), strict=True))


# --- the FeatureSpec in one pass ----------------------------------------------------------------


@pytest.mark.parametrize("target", ["implicit", "binary"])
def test_one_pass_spec_equals_the_in_memory_fit(files, tables, target, tmp_path):
    dm = module(files, target=target)
    fields, crosses = features()
    train = with_target(tables.interactions, target, "log")  # binary: ratings of 3 dropped
    assert dm.feature_spec == FeatureSpec.fit(fields, crosses, train, tables.users, tables.items)
    assert dm.summary()["interactions"] == len(train)

    dm.feature_spec.save(tmp_path / "spec.json")  # a saved spec skips the fit and gives the same module
    loaded = StreamingDataModule(str(files["log"]), str(files["users"]), str(files["items"]), target=target,
                                 spec_path=str(tmp_path / "spec.json"), batch_size=250)  # fmt: skip
    assert loaded.layout == dm.layout and loaded.row_groups == dm.row_groups


# --- shards -------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["implicit", "binary"])
def test_an_epoch_over_two_ranks_and_two_workers_sees_every_row_once(files, tables, target):
    dm = module(files, target=target, negatives=0)
    expected = every_row(dm, with_target(tables.interactions, target, "log"))
    seen, counts = [], []
    for rank in (0, 1):
        plan = TrainingPlan(dm.sampler, 0, 125, 7, lambda: 0, rank, world_size=2)
        dataset = StreamingBatches(dm.files, dm.row_groups, dm._user_row, dm._item_row, plan, 500, num_workers=2)
        assert len(dataset) == 2 * dataset.batches_per_worker
        for worker in (0, 1):
            batches = list(dataset.batches(worker))
            counts.append(len(batches))
            seen += pairs(batches)
    assert len(set(counts)) == 1  # every (rank, worker) yields as many batches: no DDP rank waits
    assert len(seen) == len(expected) and sorted(seen) == sorted(expected)  # union = all rows, no overlap


def test_dataloader_workers_split_a_rank_between_them(files, tables):
    dm = module(files, negatives=0, num_workers=2)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader)
    assert sorted(pairs(batches)) == sorted(every_row(dm, tables.interactions))


def test_shuffling_changes_the_order_between_epochs_not_the_rows(files):
    dm = module(files, negatives=0)
    epoch = {"now": 0}
    plan = TrainingPlan(dm.sampler, 0, 200, 7, lambda: epoch["now"])
    dataset = StreamingBatches(dm.files, dm.row_groups, dm._user_row, dm._item_row, plan, 500)
    first, again = pairs(dataset), pairs(dataset)
    epoch["now"] = 1
    second = pairs(dataset)
    assert first == again  # seeded by (seed, epoch)
    assert first != second and sorted(first) == sorted(second)
    log_order = [p for group in dm.row_groups for u, i, _ in dm.files.read(group)
                 for p in zip(dm._user_row.get_indexer(u.to_pandas()), dm._item_row.get_indexer(i.to_pandas()), strict=True)]  # fmt: skip
    assert first != log_order


# --- batches ------------------------------------------------------------------------------------


def test_batches_carry_the_in_memory_layout(files, tmp_path):
    dm = module(files, negatives=4)
    fields, crosses = features()
    memory = InteractionDataModule(Synthetic(**SOURCE), fields, crosses, batch_size=250, data_dir=str(tmp_path))
    memory.setup("fit")
    expected = memory.on_after_batch_transfer(next(iter(memory.train_dataloader())), 0)
    index = next(iter(dm.train_dataloader()))
    batch = dm.on_after_batch_transfer(index, 0)

    assert set(batch) == set(expected) - {"start", "position"}  # no history: no timeline bounds
    for key, value in batch.items():
        assert value.dtype == expected[key].dtype and value.dim() == expected[key].dim(), key
        if value.dim() == 2 and key != "item.bag.tags":  # bag width: the longest list of the batch's table
            assert value.shape[1] == expected[key].shape[1], key
    positives = int(batch["label"].sum())
    assert len(batch["label"]) == 5 * positives <= 250
    own = batch["item"][:positives].repeat_interleave(4)
    assert not torch.any(batch["item"][positives:] == own)  # a negative is never its row's own item
    assert torch.equal(batch["user"][positives:], batch["user"][:positives].repeat_interleave(4))
    assert int(batch["item"].max()) < len(dm.items_frame)


def test_ids_outside_the_tables_get_the_unknown_row(files, tmp_path):
    dm = module(files)
    odd = tmp_path / "odd.parquet"
    pq.write_table(pa.table({USER_ID: ["no-such-user", "0"], ITEM_ID: ["1", "no-such-item"], LABEL: [1, 1]}), odd)
    dm.validation = str(odd)
    rows = dm._validation_rows()
    assert rows["user"][:2].tolist() == [len(dm.users_frame), 0]
    assert rows["item"][1] == len(dm.items_frame)
    features = dm.on_after_batch_transfer(rows, 0)
    assert features["user.categorical"][0].eq(0).all() and features["item.categorical"][1].eq(0).all()


def test_a_short_fit_runs(files):
    dm = module(files, validation=str(files["val"]))
    model = WideDeepModule(layout=dm.layout, task=dm.task, architecture=Architecture(hidden=[16]))
    trainer = L.Trainer(max_steps=6, val_check_interval=3, limit_val_batches=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 6
    assert {"train_loss", "val_loss", "val_auc"} <= set(trainer.callback_metrics)


# --- bad input ----------------------------------------------------------------------------------


def test_a_missing_column_names_file_and_column(files, tmp_path):
    bad = tmp_path / "no_item.parquet"
    pq.write_table(pa.table({USER_ID: ["1", "2"], "product": ["3", "4"]}), bad)
    with pytest.raises(DataError, match=r"no_item\.parquet: column 'item_id': missing"):
        StreamingDataModule(str(bad)).setup()


def test_files_that_disagree_on_columns_are_named(tmp_path):
    pq.write_table(pa.table({USER_ID: ["1"], ITEM_ID: ["2"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({USER_ID: ["1"], ITEM_ID: ["3"], LABEL: [0]}), tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet: reads columns \['user_id', 'item_id', 'label'\]"):
        StreamingDataModule(str(tmp_path)).setup()


def test_a_truncated_file_is_named(files, tmp_path):
    source = files["log"] / "part-1.parquet"
    data = source.read_bytes()
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "part-0.parquet").write_bytes((files["log"] / "part-0.parquet").read_bytes())
    (cut / "part-1.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"part-1\.parquet: not a readable Parquet file"):
        StreamingDataModule(str(cut)).setup()


def test_missing_ids_name_file_row_group_and_column(tmp_path):
    bad = tmp_path / "holes.parquet"
    pq.write_table(pa.table({USER_ID: ["1", "2", "3", None], ITEM_ID: ["3", "4", "5", "6"]}), bad, row_group_size=2)
    with pytest.raises(DataError, match=r"holes\.parquet \(row group 1\): column 'user_id': 1 missing"):
        StreamingDataModule(str(bad)).setup()


def test_a_training_statistic_is_refused():
    with pytest.raises(ValueError, match="user_rows.*needs them in memory.*InteractionDataModule"):
        StreamingDataModule("log.parquet", features=[Field("user_rows", "user", kind="numeric", statistic="count")])


def test_a_history_feature_is_refused():
    with pytest.raises(ValueError, match="history.*InteractionDataModule"):
        StreamingDataModule("log.parquet", features=[Field("history", "user", kind="history")])


def test_configs_streaming_trains_and_registers_through_wdrec_fit(files, tmp_path, monkeypatch) -> None:
    from wdrec.job import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    config = Path(__file__).resolve().parents[2] / "configs" / "streaming.yaml"
    cli = run(["fit", "--config", str(config), f"--data.init_args.interactions={files['log']}",
               f"--data.init_args.users={files['users']}", f"--data.init_args.items={files['items']}",
               f"--data.init_args.validation={files['val']}", "--data.init_args.batch_size=500",
               "--trainer.enable_progress_bar=false", "--diagnostics.enabled=false"])  # fmt: skip
    assert isinstance(cli.datamodule, StreamingDataModule)
    assert cli.trainer.state.finished and 0.0 <= float(cli.trainer.callback_metrics["val_auc"]) <= 1.0
    bundle = tmp_path / "bundles" / cli.trainer.logger.run_id
    assert (bundle / "weights.safetensors").is_file()  # the registered model's bundle
