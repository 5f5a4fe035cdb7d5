"""Splits and targets, as DESIGN.md's evaluation protocols define them (L1O, PW, temporal, predefined)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wdrec.data.datamodule import InteractionDataModule
from wdrec.data.schema import InteractionData
from wdrec.data.sources.files import Files
from wdrec.data.splits import make_splits, resolve_split


def frame(rows: list[tuple[str, str, int]]) -> InteractionData:
    return InteractionData(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))


def pairs(split: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(split["user_id"], split["item_id"], strict=True))


# --- L1O ----------------------------------------------------------------------------------------


def test_leave_one_out_on_movielens(movielens_100k):
    splits = make_splits(movielens_100k, "l1o", "implicit")
    train, val, test = splits.train, splits.val, splits.test

    assert len(val) == len(test) == 943  # one of each per user: every ML-100k user has 20+ ratings
    assert val["user_id"].is_unique and test["user_id"].is_unique
    assert len(train) + len(val) + len(test) == len(movielens_100k.interactions)
    assert all(split["label"].eq(1.0).all() for _, split in splits.items())  # implicit: all positives
    seen = set(pairs(train))
    assert not any(pair in seen for pair in pairs(test))
    assert not any(pair in seen for pair in pairs(val))

    def order(split: pd.DataFrame) -> dict[str, int]:
        return dict(zip(split["user_id"], split["timestamp"], strict=True))

    last_train = order(train.sort_values("timestamp").groupby("user_id").tail(1))
    val_at, test_at = order(val), order(test)
    for user, test_key in test_at.items():
        assert last_train[user] <= val_at[user] <= test_key, user


TIES = [
    ("a", "1", 10), ("a", "2", 20),  # two interactions: all stay in train
    ("b", "1", 5),
    ("c", "3", 30), ("c", "1", 10), ("c", "2", 20),  # any input order
    ("d", "9", 50), ("d", "1", 60), ("d", "10", 50), ("d", "7", 40),  # a tie at 50: "9" then "10" in the log
]  # fmt: skip


@pytest.mark.parametrize(("tie_break", "later"), [("item_id", "10"), ("log_order", "10")])
def test_leave_one_out_orders_by_time_then_the_tie_rule_and_keeps_short_users_in_train(tie_break, later):
    data = frame(TIES)
    splits = make_splits(data, "l1o", "implicit", tie_break=tie_break)

    assert sorted(pairs(splits.test)) == [("c", "3"), ("d", "1")]
    assert sorted(pairs(splits.val)) == [("c", "2"), ("d", later)]  # of the tie at 50, the later one
    earlier = {"9", "10"} - {later}
    assert sorted(pairs(splits.train)) == sorted([("a", "1"), ("a", "2"), ("b", "1"), ("c", "1"), ("d", "7"), ("d", *earlier)])


def test_ids_order_as_numbers_not_text_and_the_log_order_is_the_rows_order():
    """"9" < "10" as numbers (as text "10" < "9": the accident that once chose MovieLens' test items)."""
    swapped = frame(TIES[:6] + [TIES[8], TIES[7], TIES[6], TIES[9]])  # "10" now comes first in the log
    assert ("d", "10") in pairs(make_splits(swapped, "l1o", "implicit", tie_break="item_id").val)
    assert ("d", "9") in pairs(make_splits(swapped, "l1o", "implicit", tie_break="log_order").val)
    text_ids = frame([("d", "b9", 50), ("d", "b10", 50), ("d", "x", 60)])
    assert ("d", "b9") in pairs(make_splits(text_ids, "l1o", "implicit", tie_break="item_id").val)  # not all numbers: text


def test_random_ties_are_seeded_and_touch_only_tied_users(movielens_100k):
    by_seed = {seed: make_splits(movielens_100k, "l1o", "implicit", seed=seed).test for seed in (1, 2)}
    numeric = make_splits(movielens_100k, "l1o", "implicit", tie_break="item_id").test
    first, again = make_splits(movielens_100k, "l1o", "implicit", seed=1).test, by_seed[1]
    assert pairs(first) == pairs(again)
    log = movielens_100k.interactions
    last = log[log["timestamp"] == log.groupby("user_id")["timestamp"].transform("max")]
    tied = set(last["user_id"][last.duplicated("user_id", keep=False)])
    differ = {u for (u, a), (_, b) in zip(sorted(pairs(by_seed[1])), sorted(pairs(by_seed[2])), strict=True) if a != b}
    assert differ and differ <= tied  # seeds move only the held-out items of users with a tie at the end
    moved = {u for (u, a), (_, b) in zip(sorted(pairs(first)), sorted(pairs(numeric)), strict=True) if a != b}
    assert moved and moved <= tied and len(tied) > 400  # 415 of 943 users have a tie in their last second


# --- random (PW) --------------------------------------------------------------------------------


def test_pointwise_protocol_random_split_of_binary_labels(movielens_100k):
    log = movielens_100k.interactions
    kept = log[log["rating"] != 3]
    splits = make_splits(movielens_100k, "random", "binary", seed=42)

    for _, split in splits.items():
        assert not split["rating"].eq(3).any()
        assert split["label"].tolist() == (split["rating"] >= 4).astype(float).tolist()  # 4, 5 → 1; 1, 2 → 0
    n = len(kept)
    for (_, split), fraction in zip(splits.items(), (0.8, 0.1, 0.1), strict=True):
        assert abs(len(split) - fraction * n) <= 1
    index = [set(split.index) for _, split in splits.items()]
    assert not (index[0] & index[1] or index[0] & index[2] or index[1] & index[2])
    assert index[0] | index[1] | index[2] == set(kept.index)


def test_random_split_is_seeded(movielens_100k):
    first = make_splits(movielens_100k, "random", "binary", seed=7)
    again = make_splits(movielens_100k, "random", "binary", seed=7)
    other = make_splits(movielens_100k, "random", "binary", seed=8)

    for name in ("train", "val", "test"):
        assert getattr(first, name).index.equals(getattr(again, name).index)
        assert not getattr(first, name).index.equals(getattr(other, name).index)


def test_binary_thresholds_are_configurable(movielens_100k):
    splits = make_splits(movielens_100k, "random", "binary", positive_threshold=5, negative_threshold=3)
    ratings = pd.concat([split for _, split in splits.items()])

    assert set(ratings["rating"]) == {1.0, 2.0, 3.0, 5.0}  # 4 is now the dropped middle
    assert ratings["label"].eq(ratings["rating"].eq(5.0)).all()


# --- temporal and predefined --------------------------------------------------------------------


def test_temporal_split_cuts_once_in_time(movielens_100k):
    splits = make_splits(movielens_100k, "temporal", "implicit")
    train, val, test = (split["timestamp"] for _, split in splits.items())

    assert (len(train), len(val), len(test)) == (80_000, 10_000, 10_000)
    assert train.max() <= val.min() and val.max() <= test.min()


def write_csv(path: Path, rows: list[tuple]) -> str:
    pd.DataFrame(rows, columns=["user", "item", "clicked"]).to_csv(path, index=False)
    return str(path)


def test_predefined_split_from_files(tmp_path):
    files = Files(
        user_column="user",
        item_column="item",
        label_column="clicked",
        train=write_csv(tmp_path / "train.csv", [(1, 10, 1), (1, 11, 0), (2, 10, 1)]),
        val=write_csv(tmp_path / "val.csv", [(1, 12, 1)]),
        test=write_csv(tmp_path / "test.csv", [(2, 11, 0), (2, 12, 1)]),
    )
    data = files.load()

    binary = make_splits(data, "predefined", "binary")
    assert pairs(binary.train) == [("1", "10"), ("1", "11"), ("2", "10")]
    assert binary.train["label"].tolist() == [1.0, 0.0, 1.0]  # the file's labels
    assert pairs(binary.val) == [("1", "12")]
    assert pairs(binary.test) == [("2", "11"), ("2", "12")] and binary.test["label"].tolist() == [0.0, 1.0]
    assert len(data.interactions) == 6  # the whole log is the three files together
    implicit = make_splits(data, "predefined", "implicit")
    assert implicit.train["label"].eq(1.0).all()  # implicit: every interaction is a positive


def test_predefined_split_with_train_only_has_empty_val_and_test(tmp_path):
    files = Files(train=write_csv(tmp_path / "train.csv", [(1, 10, 1)]), user_column="user", item_column="item")
    splits = make_splits(files.load(), "predefined", "implicit")

    assert len(splits.train) == 1 and splits.val.empty and splits.test.empty
    assert list(splits.val.columns) == list(splits.train.columns)


@pytest.mark.parametrize(
    ("requested", "carries_split", "chosen"),
    [(None, True, "predefined"), ("predefined", True, "predefined"), (None, False, "l1o"), ("random", False, "random")],
)
def test_files_with_their_own_split_imply_predefined(requested, carries_split, chosen):
    assert resolve_split(requested, carries_split, "files") == chosen


@pytest.mark.parametrize("requested", ["random", "l1o", "temporal"])
def test_another_split_of_pre_split_files_is_refused_saying_how_to_fix_it(requested):
    """Re-splitting would move the user's own test rows into training, without a word."""
    with pytest.raises(ValueError, match=f"data.split is '{requested}'.*pass --data.split predefined"):
        resolve_split(requested, True, "files")


def test_the_data_module_trains_on_the_users_train_file_and_tests_on_their_test_file(tmp_path):
    files = Files(
        user_column="user",
        item_column="item",
        label_column="clicked",
        train=write_csv(tmp_path / "train.csv", [(u, i, (u + i) % 2) for u in range(20) for i in range(10)]),
        val=write_csv(tmp_path / "val.csv", [(u, 10, 1) for u in range(20)]),
        test=write_csv(tmp_path / "test.csv", [(u, 11, u % 2) for u in range(20)]),
    )
    module = InteractionDataModule(files, target="binary")  # no split given
    module.setup()

    assert module.split == "predefined" and module.hparams_initial["split"] == "predefined"
    assert pairs(module.splits.test) == [(str(u), "11") for u in range(20)]
    assert pairs(module.splits.val) == [(str(u), "10") for u in range(20)]
    assert len(module.splits.train) == 200


# --- errors -------------------------------------------------------------------------------------

NO_TIME = InteractionData(pd.DataFrame({"user_id": ["1", "2"], "item_id": ["a", "b"], "rating": [4.0, 1.0]}))
NO_RATING = InteractionData(pd.DataFrame({"user_id": ["1", "2"], "item_id": ["a", "b"], "timestamp": [1, 2]}))


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (NO_TIME, {"how": "l1o", "target": "implicit"}, "'l1o' orders each user's interactions by time"),
        (NO_TIME, {"how": "temporal", "target": "implicit"}, "'temporal' needs a timestamp column"),
        (NO_RATING, {"how": "random", "target": "rating"}, "target 'rating' needs a rating column"),
        (NO_RATING, {"how": "random", "target": "binary"}, "target 'binary' needs a label or rating column"),
        (NO_TIME, {"how": "random", "target": "regression"}, "target must be implicit, binary or rating"),
        (NO_TIME, {"how": "kfold", "target": "implicit"}, "split must be l1o, random, temporal or predefined"),
        (NO_TIME, {"how": "predefined", "target": "implicit"}, "'predefined' needs a source with train"),
        (NO_TIME, {"how": "random", "target": "binary", "positive_threshold": 2.0, "negative_threshold": 4.0},
         r"negative_threshold \(4.0\) must be below positive_threshold \(2.0\)"),  # fmt: skip
    ],
)
def test_impossible_splits_and_targets_are_refused(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_splits(data, **kwargs)


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.2), (1.2, -0.1, -0.1), (0.5, 0.5), (0.9, 0.1, np.nan)])
def test_bad_fractions_are_refused(fractions):
    with pytest.raises(ValueError, match="split_fractions must be three non-negative numbers summing to 1"):
        make_splits(NO_RATING, "random", "implicit", fractions=fractions)
