"""InteractionDataModule: ML-100k in, Wide&Deep batches out; DDP shards; evaluation loaders; bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from wdrec.data import batches
from wdrec.data.batches import (
    PointwiseBatches,
    RankingBatches,
    ResidentBatches,
    TrainBatches,
    TrainingPlan,
    row_features,
)
from wdrec.data.datamodule import InteractionDataModule
from wdrec.data.features import Field
from wdrec.data.sampling import UnseenItemSampler
from wdrec.data.schema import DataError
from wdrec.data.sources import movielens
from wdrec.data.sources.base import SourceUnavailable
from wdrec.data.sources.files import Files
from wdrec.data.sources.movielens import MovieLens

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NUM_ITEMS = 1682
RANKING_USERS = 16


@pytest.fixture(scope="module")
def dm(data_dir, movielens_features) -> InteractionDataModule:
    """ML-100k with the MovieLens features: leave-one-out, implicit, 4 negatives per positive."""
    fields, crosses = movielens_features()
    module = InteractionDataModule(
        MovieLens("100k"), fields, crosses, batch_size=1000, ranking_users=RANKING_USERS, data_dir=str(data_dir)
    )
    module.prepare_data()
    module.setup("fit")
    return module


# --- what the model needs -----------------------------------------------------------------------


def test_layout_is_ready_right_after_construction(data_dir, movielens_features):
    fields, crosses = movielens_features()
    dm = InteractionDataModule(MovieLens("100k"), fields, crosses, data_dir=str(data_dir))
    layout = dm.layout  # no trainer, no setup(): the CLI links it into the model at instantiation

    spec = dm.feature_spec
    assert layout["wide_size"] == spec.wide_size
    tables = {side: {e["name"]: e["num_embeddings"] for e in layout[side]["categorical"] + layout[side]["bags"]}
              for side in ("user", "item")}  # fmt: skip
    assert tables["user"] == {"user_id": 944, "age": 8, "gender": 3, "occupation": 22, "zip_prefix": 6, "history": 1680}
    assert tables["item"] == {"item_id": 1680, "genres": 20}  # 1679 items in train (+ OOV), 19 genres (+ pad)
    for side in ("user", "item"):
        for name, size in tables[side].items():
            assert size == spec.cardinality(name), name
    assert (layout["user"]["num_dense"], layout["item"]["num_dense"]) == (0, 1)  # release_year
    history = next(e for e in layout["user"]["bags"] if e["name"] == "history")
    assert history["dim"] == 0  # deep=False: wide-only
    assert dm.num_items == NUM_ITEMS  # the whole catalogue, items never rated in train included


def test_the_output_starts_at_the_mean_training_rating_for_the_rating_target(data_dir, dm):
    rating = InteractionDataModule(MovieLens("100k"), split="random", target="rating", data_dir=str(data_dir))
    rating.setup("fit")
    expected = rating.splits.train["label"].mean()
    assert rating.output_bias == pytest.approx(expected) and 3.4 < expected < 3.7
    assert dm.output_bias == 0.0  # binary targets: logits start at 0


def test_statistics_sum_up_each_entity_s_training_rows_and_reach_the_model_as_numbers(data_dir):
    """count = log(1 + training rows); label_mean = (sum + 10 · global mean) / (rows + 10); mean_time = mean
    days since 1970; an entity without training rows gets the global means. As pandas computes them."""
    statistics = [Field("user_rows", "user", kind="numeric", statistic="count"),
                  Field("user_mean", "user", kind="numeric", statistic="label_mean"),
                  Field("item_mean", "item", kind="numeric", statistic="label_mean"),
                  Field("item_time", "item", kind="numeric", statistic="mean_time")]  # fmt: skip
    module = InteractionDataModule(MovieLens("100k"), [Field("user_id", "user"), Field("item_id", "item"), *statistics],
                                   split="random", target="rating", data_dir=str(data_dir))  # fmt: skip
    module.setup("fit")
    train = module.splits.train
    prior = train["label"].mean()
    for frame, key, column in [(module.users_frame, "user_id", "user_mean"), (module.items_frame, "item_id", "item_mean")]:
        grouped = train.groupby(key)["label"].agg(["sum", "count"]).reindex(frame[key]).fillna(0)
        expected = (grouped["sum"] + 10 * prior) / (grouped["count"] + 10)
        np.testing.assert_allclose(frame[column], expected, rtol=1e-5)
    rows = train.groupby("user_id").size().reindex(module.users_frame["user_id"]).fillna(0)
    np.testing.assert_allclose(module.users_frame["user_rows"], np.log1p(rows), rtol=1e-6)
    days = (train["timestamp"] / 86_400).groupby(train["item_id"]).mean().reindex(module.items_frame["item_id"])
    rated = days.notna().to_numpy()
    np.testing.assert_allclose(module.items_frame["item_time"][rated], days[rated], rtol=1e-6)  # float32 days: ~1 minute
    never_rated = ~rated
    assert never_rated.any() and np.allclose(module.items_frame.loc[never_rated, "item_mean"], prior)
    assert np.allclose(module.items_frame.loc[never_rated, "item_time"], (train["timestamp"] / 86_400).mean())
    layout = module.layout
    assert (layout["user"]["num_dense"], layout["item"]["num_dense"]) == (2, 2)  # standardised numbers, deep part


def test_a_mean_label_over_implicit_feedback_is_refused(data_dir):
    """Every implicit training row is a positive: its mean says nothing."""
    mean = Field("user_mean", "user", kind="numeric", statistic="label_mean")
    with pytest.raises(ValueError, match="user_mean.*label_mean needs the binary or rating target"):
        InteractionDataModule(MovieLens("100k"), [Field("user_id", "user"), Field("item_id", "item"), mean], data_dir=str(data_dir))
    with pytest.raises(ValueError, match="statistic is a number: give it kind numeric"):
        Field("user_mean", "user", statistic="label_mean")


def test_train_batch_has_the_whole_layout(dm):
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)

    rows = len(batch["label"])
    assert rows == 1000  # 200 positives + 800 negatives
    expected = {
        "user.categorical": (torch.long, 5),
        "user.dense": (torch.float32, 0),
        "user.bag.history": (torch.long, 50),
        "item.categorical": (torch.long, 1),
        "item.dense": (torch.float32, 1),
        "item.bag.genres": (torch.long, None),
        "wide.user": (torch.long, 4 + 50),  # user_id, age, gender, occupation (zip: wide=False) + history
        "wide.item": (torch.long, None),
        "wide.cross": (torch.long, None),
        "user": (torch.long, None),
        "item": (torch.long, None),
        "label": (torch.float32, None),
        "start": (torch.long, None),  # where the row's history begins in the timeline
        "position": (torch.long, None),  # and where it ends: before the row's own time
    }
    assert set(batch) == set(expected)
    for key, (dtype, width) in expected.items():
        assert batch[key].dtype == dtype and batch[key].shape[0] == rows, key
        if width is not None:
            assert batch[key].shape[1] == width, key
    labels = batch["label"]
    assert set(labels.tolist()) == {0.0, 1.0}
    assert int(labels.eq(0).sum()) == 4 * int(labels.eq(1).sum())


# --- history at the time of each interaction ---------------------------------------------------


def test_a_training_row_sees_only_what_its_user_did_before_it(dm):
    """The paper's "installed apps" at impression time: no later item, and never the row's own."""
    train = dm.splits.train
    spec = dm.feature_spec
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    history = batch["user.bag.history"]
    for row in range(0, 200, 7):  # positives come first in a batch
        user = dm.users_frame["user_id"].iloc[int(batch["user"][row])]
        item = dm.items_frame["item_id"].iloc[int(batch["item"][row])]
        mine = train[train["user_id"] == user]
        when = int(mine.loc[mine["item_id"] == item, "timestamp"].iloc[0])
        before = mine[mine["timestamp"] < when].sort_values("timestamp", kind="stable").tail(50)
        expected = set(spec.item_index(before["item_id"]).tolist()) - {0}
        assert set(history[row].tolist()) - {0} == expected, (user, item)


def test_a_negative_shares_its_positive_s_moment(dm):
    batch = next(iter(dm.train_dataloader()))
    positives = int(batch["label"].sum())
    assert torch.equal(batch["position"][positives:], batch["position"][:positives].repeat_interleave(4))


def test_evaluation_and_serving_see_the_whole_stored_history(dm):
    batch = dm.on_after_batch_transfer(next(iter(dm.val_dataloader()[0])), 0)
    stored = dm.feature_spec.encode("user", dm.users_frame).bags["history"]
    for row in range(0, len(batch["label"]), 97):
        user = int(batch["user"][row])
        assert set(batch["user.bag.history"][row].tolist()) - {0} == set(stored[user].tolist()) - {0}


def test_test_rows_also_look_back_on_the_validation_interaction(dm):
    """The validation item precedes the test item: at test time it is history, not a candidate."""
    batch = dm.on_after_batch_transfer(next(iter(dm.test_dataloader()[0])), 0)
    val_item = dict(zip(dm.rows["val"]["user"].tolist(), dm.rows["val"]["item"].tolist(), strict=True))
    vocab = dm.feature_spec.item_index(dm.items_frame["item_id"])
    for row in range(0, int(batch["label"].sum()), 53):  # test positives
        user = int(batch["user"][row])
        assert vocab[val_item[user]] in batch["user.bag.history"][row].tolist()


# --- DDP sharding, without processes ------------------------------------------------------------


def shards(make, world_size: int) -> list[list[dict[str, torch.Tensor]]]:
    """Every rank's batches of one epoch; ``make(rank)`` builds that rank's dataset."""
    out = []
    for rank in range(world_size):
        dataset = make(rank)
        batches = list(dataset)
        assert len(batches) == len(dataset)
        out.append(batches)
    return out


@pytest.mark.parametrize("negative_draw", [batches.NEGATIVE_DRAW, 5000])  # one draw per epoch; one per 6 batches
def test_train_shards_cover_every_movielens_positive_once(dm, monkeypatch, negative_draw):
    monkeypatch.setattr(batches, "NEGATIVE_DRAW", negative_draw)
    rows = dm.rows["train"]
    ranks = shards(
        lambda rank: TrainBatches(rows, TrainingPlan(dm.sampler, negatives=4, batch_size=1000, seed=42,
                                                     epoch=lambda: 0, rank=rank, world_size=2)),  # fmt: skip
        2,
    )

    assert len(ranks[0]) == len(ranks[1])  # no rank waits on another
    positive = [
        (batch["user"] * NUM_ITEMS + batch["item"])[batch["label"] > 0.5] for batches in ranks for batch in batches
    ]
    seen = torch.cat(positive)
    expected = rows["user"] * NUM_ITEMS + rows["item"]
    assert len(seen) == len(expected)  # nothing repeated, nothing dropped ...
    assert torch.equal(seen.sort().values, expected.sort().values)  # ... and exactly these
    both = [torch.cat([(b["user"] * NUM_ITEMS + b["item"])[b["label"] > 0.5] for b in batches]) for batches in ranks]
    assert not np.intersect1d(both[0].numpy(), both[1].numpy()).size
    negatives = [(b["user"][b["label"] < 0.5], b["item"][b["label"] < 0.5]) for batches in ranks for b in batches]
    users, items = (torch.cat(side) for side in zip(*negatives, strict=True))
    assert len(items) == 4 * len(expected)  # the ratio, whichever way the draws are grouped
    assert not dm.sampler.is_positive(users, items).any()


@pytest.mark.parametrize(("n", "world_size", "per_batch"), [(1001, 2, 64), (1001, 3, 100), (129, 2, 64)])
def test_every_loader_shards_an_odd_number_of_rows_exactly(n, world_size, per_batch):
    """Rows are numbered by their user index, so the union of the shards must be range(n).

    129 rows on 2 ranks: shards of 65 and 64 rows, 64 a batch: both ranks still yield 2 batches.
    """
    everyone = torch.arange(n)
    rows = {"user": everyone, "item": everyone % 7, "label": torch.ones(n)}
    sampler = UnseenItemSampler(rows["user"], rows["item"], 7)
    relevant = {"user": everyone.repeat(2), "item": torch.cat([everyone % 7, (everyone + 1) % 7])}
    exclude = {"user": everyone, "item": (everyone + 2) % 7}
    bounds = {"start": everyone, "position": everyone}  # where each user's history lies (unused here)
    loaders = {
        "train": lambda rank: TrainBatches(rows, TrainingPlan(sampler, negatives=1, batch_size=2 * per_batch, seed=0,
                                                              epoch=lambda: 3, rank=rank, world_size=world_size)),  # fmt: skip
        "pointwise": lambda rank: PointwiseBatches(rows, per_batch, rank, world_size),
        "ranking": lambda rank: RankingBatches(everyone, bounds, relevant, exclude, per_batch, rank, world_size),
    }
    for name, make in loaders.items():
        ranks = shards(make, world_size)
        assert len({len(batches) for batches in ranks}) == 1, name
        if name == "ranking":
            users = torch.cat([b["ranking_user"] for batches in ranks for b in batches])
            pairs = torch.cat([b["relevant_user"] * 7 + b["relevant_item"] for batches in ranks for b in batches])
            assert torch.equal(pairs.sort().values, (relevant["user"] * 7 + relevant["item"]).sort().values), name
        else:
            users = torch.cat([b["user"][b["label"] > 0.5] for batches in ranks for b in batches])
        assert torch.equal(users.sort().values, everyone), name


# --- training batches built on the device (run here on CPU tensors) ---------------------------


def resident(dm: InteractionDataModule, rank: int = 0, world_size: int = 1, epoch: int = 0) -> ResidentBatches:
    plan = TrainingPlan(dm.sampler, negatives=4, batch_size=1000, seed=42, epoch=lambda: epoch, rank=rank, world_size=world_size)
    return ResidentBatches(dm.rows["train"], plan)


@pytest.mark.parametrize("world_size", [1, 2])
def test_resident_batches_have_one_shape_and_cover_the_epoch_once_but_the_last_partial_batch(dm, world_size):
    rows = dm.rows["train"]
    ranks = shards(lambda rank: resident(dm, rank, world_size), world_size)

    assert len({len(batches) for batches in ranks}) == 1  # no rank waits on another
    assert {tuple(b[k].shape) for batches in ranks for b in batches for k in b} == {(1000,)}  # 200 positives + 800 negatives
    keys = [torch.cat([(b["user"] * NUM_ITEMS + b["item"])[:200] for b in batches]) for batches in ranks]
    assert all(b["label"][:200].eq(1).all() and b["label"][200:].eq(0).all() for batches in ranks for b in batches)
    seen = torch.cat(keys)
    assert len(seen) == len(torch.unique(seen))  # no positive twice: the ranks' shards are disjoint
    assert len(rows["label"]) - len(seen) < world_size * (200 + 1)  # only the last partial batch per rank is left out
    assert np.isin(seen.numpy(), (rows["user"] * NUM_ITEMS + rows["item"]).numpy()).all()
    negatives = [(b["user"][200:], b["item"][200:]) for batches in ranks for b in batches]
    users, items = (torch.cat(side) for side in zip(*negatives, strict=True))
    assert not dm.sampler.is_positive(users, items).any()
    first = ranks[0][0]  # a negative shares its positive's user and moment
    for key in ("user", "start", "position"):
        assert torch.equal(first[key][200:], first[key][:200].repeat_interleave(4)), key


def test_resident_batches_are_seeded_by_epoch(dm):
    def first_batch(epoch: int) -> dict[str, torch.Tensor]:
        return next(iter(resident(dm, epoch=epoch)))

    again, other = first_batch(1), first_batch(2)
    assert all(torch.equal(first_batch(1)[k], again[k]) for k in again)
    assert not torch.equal(again["item"], other["item"])


def test_resident_features_are_those_of_the_same_index_rows(dm, monkeypatch):
    monkeypatch.setattr(dm, "resident", True)  # forced on, as --data.resident=true does on a CPU
    loader = dm.train_dataloader()
    batch = next(iter(loader))

    assert isinstance(loader, ResidentBatches)
    features = dm.on_after_batch_transfer(batch, 0)
    expected = row_features(dm.feature_spec, batch, dm.user_tensors, dm.item_tensors, dm.timeline)
    assert features.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(features[key], value), key


def test_the_training_path_is_resident_only_on_cuda_by_default(dm):
    assert dm.resident is None and not isinstance(dm.train_dataloader(), ResidentBatches)  # no trainer: the CPU


def test_a_batch_larger_than_a_resident_shard_is_refused():
    rows = {"user": torch.arange(10), "item": torch.arange(10) % 3, "label": torch.ones(10)}
    plan = TrainingPlan(UnseenItemSampler(rows["user"], rows["item"], 3), negatives=1, batch_size=12, seed=0,
                        epoch=lambda: 0, world_size=2)  # fmt: skip
    with pytest.raises(ValueError, match="6 positives per batch on each of 2 device"):
        ResidentBatches(rows, plan)


# --- evaluation loaders -------------------------------------------------------------------------


def items_by_user(dm: InteractionDataModule, *frames: pd.DataFrame) -> dict[int, set[int]]:
    """User row → item rows, from split tables (independent of the datamodule's index tensors)."""
    user_row = pd.Index(dm.users_frame["user_id"])
    item_row = pd.Index(dm.items_frame["item_id"])
    out: dict[int, set[int]] = {}
    for frame in frames:
        users, items = user_row.get_indexer(frame["user_id"]), item_row.get_indexer(frame["item_id"])
        for user, item in zip(users.tolist(), items.tolist(), strict=True):
            out.setdefault(user, set()).add(item)
    return out


@pytest.mark.parametrize("stage", ["val", "test"])
def test_evaluation_loaders_pointwise_then_full_ranking(dm, stage):
    pointwise, ranking = getattr(dm, f"{stage}_dataloader")()

    rows = {key: torch.cat([batch[key] for batch in pointwise]) for key in ("user", "item", "label")}
    labels = rows["label"]
    assert int(labels.eq(1).sum()) == 943 and int(labels.eq(0).sum()) == 4 * 943  # fixed, seeded negatives
    interacted = items_by_user(dm, dm.splits.train, dm.splits.val, dm.splits.test)
    negatives = zip(rows["user"][labels == 0].tolist(), rows["item"][labels == 0].tolist(), strict=True)
    assert not any(item in interacted[user] for user, item in negatives)  # not even the val or test item
    blocks = list(ranking)
    assert torch.equal(torch.cat([b["ranking_user"] for b in blocks]), torch.arange(943))  # every user ranked

    first = dm.on_after_batch_transfer(blocks[0], 1)
    users = blocks[0]["ranking_user"].tolist()
    assert len(users) == RANKING_USERS
    assert first["relevant"].shape == first["exclude"].shape == (RANKING_USERS, NUM_ITEMS)
    assert first["relevant"].dtype == first["exclude"].dtype == torch.bool
    # Each user once, its history the window at the evaluation point: the model pairs it with the catalogue.
    assert first["user.categorical"].shape[0] == first["user.bag.history"].shape[0] == RANKING_USERS
    assert "item.categorical" not in first and "wide.cross" not in first
    assert first["relevant"].sum(dim=1).eq(1).all()  # leave-one-out: one relevant item per user

    relevant = items_by_user(dm, getattr(dm.splits, stage))
    seen = items_by_user(dm, dm.splits.train, *([dm.splits.val] if stage == "test" else []))
    for row, user in enumerate(users):
        assert set(first["relevant"][row].nonzero().flatten().tolist()) == relevant[user]
        assert set(first["exclude"][row].nonzero().flatten().tolist()) == seen[user]
    assert not (first["relevant"] & first["exclude"]).any()


# --- bad input ----------------------------------------------------------------------------------

GOOD = "user,item,ts\n1,10,100\n1,11,200\n1,12,300\n1,13,400\n2,10,150\n2,11,250\n2,12,350\n2,14,450\n"
BAD_FILES = {
    "missing column": ("user,item\n1,10\n2,11\n", "ts", "missing; expected columns"),
    "NaN ids": ("user,item,ts\n1,10,100\n,11,200\n", "user", "1 missing ids"),
    "empty file": ("", None, "empty file"),
    "duplicates": ("user,item,ts\n1,10,100\n1,10,100\n", None, "1 duplicate interactions"),
}


@pytest.mark.parametrize(("target", "ranking", "loaders"), [("binary", None, 1), ("binary", True, 2), ("implicit", None, 2),
                                                          ("implicit", False, 1), ("rating", None, 1)])  # fmt: skip
def test_the_catalogue_is_ranked_where_it_selects_the_model_or_when_asked(data_dir, target, ranking, loaders):
    """Ranking every user against every item took 70% of the PW job's time, which selects on AUC."""
    dm = InteractionDataModule(MovieLens("100k"), split="random", target=target, ranking=ranking, data_dir=str(data_dir))
    dm.prepare_data()
    assert len(dm.val_dataloader()) == len(dm.test_dataloader()) == loaders
    assert dm.full_ranking == (loaders == 2)


def test_ranking_a_rating_model_is_refused_by_name(data_dir):
    with pytest.raises(ValueError, match="ranking: the rating target is evaluated pointwise"):
        InteractionDataModule(MovieLens("100k"), split="random", target="rating", ranking=True, data_dir=str(data_dir))


def files_module(path: Path, **kwargs) -> InteractionDataModule:
    source = Files(str(path), user_column="user", item_column="item", timestamp_column="ts", **kwargs)
    return InteractionDataModule(source, data_dir=str(path.parent / "cache"))


@pytest.mark.parametrize("trigger", ["layout", "setup"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_raise_a_data_error_naming_file_and_column(tmp_path, case, trigger):
    text, column, problem = BAD_FILES[case]
    path = tmp_path / "clicks.csv"
    path.write_text(text)
    dm = files_module(path)

    with pytest.raises(DataError, match=problem) as error:
        if trigger == "layout":
            _ = dm.layout
        else:
            dm.setup("fit")
    assert error.value.origin == str(path) and str(path) in str(error.value)
    assert error.value.column == column
    if column is not None:
        assert f"column '{column}'" in str(error.value)


def test_a_feature_missing_from_the_users_file_is_named(tmp_path):
    clicks = tmp_path / "clicks.csv"
    clicks.write_text(GOOD)
    users = tmp_path / "users.csv"
    users.write_text("user,city\n1,Paris\n2,Oslo\n")
    source = Files(str(clicks), user_column="user", item_column="item", timestamp_column="ts", users=str(users))
    fields = [Field("user_id", "user"), Field("age", "user", kind="numeric"), Field("item_id", "item")]
    dm = InteractionDataModule(source, fields, data_dir=str(tmp_path / "cache"))

    with pytest.raises(DataError, match="column 'age': missing; feature 'age' reads it"):
        dm.setup("fit")


def test_a_mean_time_without_timestamps_is_refused_by_name(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text("user,item\n1,10\n1,11\n1,12\n2,10\n2,11\n2,12\n")
    when = Field("user_time", "user", kind="numeric", statistic="mean_time")
    source = Files(str(path), user_column="user", item_column="item")
    module = InteractionDataModule(source, [Field("user_id", "user"), Field("item_id", "item"), when], split="random")
    with pytest.raises(DataError, match="column 'timestamp': feature 'user_time' \\(statistic mean_time\\) needs timestamps"):
        module.setup("fit")


def test_good_files_make_a_datamodule(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text(GOOD)
    dm = files_module(path)

    assert dm.num_items == 5  # items 10..14
    assert dm.layout["item"]["categorical"][0]["num_embeddings"] == 3  # 10 and 11 (+ OOV): the rest are val/test
    assert not (tmp_path / "cache").exists()  # the user's own files are read in place, never cached


@pytest.mark.parametrize("archive", ["unreachable", "missing", "corrupt"])
def test_a_failed_download_leaves_no_file_in_the_cache(tmp_path, monkeypatch, archive):
    """GroupLens is unreachable from the build machines; a local URL covers missing and corrupt archives."""
    if archive != "unreachable":
        served = tmp_path / "served"
        served.mkdir()
        if archive == "corrupt":
            (served / "ml-100k.zip").write_bytes(b"PK\x03\x04 not what GroupLens published" * 1000)
        monkeypatch.setattr(movielens, "GROUPLENS", served.as_uri())
    cache = tmp_path / "cache"
    dm = InteractionDataModule(MovieLens("100k", routes=("grouplens",)), data_dir=str(cache))

    with pytest.raises(SourceUnavailable, match="could not get MovieLens 100k; tried grouplens"):
        dm.prepare_data()
    with pytest.raises(SourceUnavailable):
        _ = dm.layout
    assert [p for p in cache.rglob("*") if not p.is_dir()] == []
