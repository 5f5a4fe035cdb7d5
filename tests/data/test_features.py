"""FeatureSpec: fitted on the training split only, saved as JSON, one transform for training and serving.

The MovieLens tests fit the features of ``conftest.movielens_features`` on the real ML-100k
training split; the small hand-made tables spell out one rule each (vocabulary indices are
1-based in sorted order, 0 is OOV / padding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
import torch

from wdrec.data.entities import build_items_frame, build_users_frame
from wdrec.data.features import CROSS_PRIMES, Cross, FeatureSpec, Field, SideTensors
from wdrec.data.schema import STRING_LIST, DataError
from wdrec.data.splits import Splits, make_splits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lists(values: list[list[str]]) -> pd.Series:
    return pd.Series(values, dtype=STRING_LIST)


def fit_small(
    fields: list[Field], users: pd.DataFrame, items: pd.DataFrame, crosses: Sequence[Cross] = ()
) -> FeatureSpec:
    """Fit on a training log in which every user met every item: all entities are training entities."""
    train = users[["user_id"]].merge(items[["item_id"]], how="cross")
    return FeatureSpec.fit(fields, list(crosses), train, users, items)


@pytest.fixture(scope="module")
def ml_splits(movielens_100k) -> Splits:
    return make_splits(movielens_100k, "l1o", "implicit")


@pytest.fixture(scope="module")
def ml_tables(movielens_100k, ml_splits) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users (with their training history) and the catalogue, as the datamodule builds them."""
    return build_users_frame(movielens_100k, ml_splits.train), build_items_frame(movielens_100k)


@pytest.fixture(scope="module")
def ml_spec(ml_splits, ml_tables, movielens_features) -> FeatureSpec:
    fields, crosses = movielens_features()
    return FeatureSpec.fit(fields, crosses, ml_splits.train, *ml_tables)


@pytest.fixture(scope="module")
def ml_encoded(ml_spec, ml_tables) -> tuple[SideTensors, SideTensors]:
    users, items = ml_tables
    return ml_spec.encode("user", users), ml_spec.encode("item", items)


def train_rows(splits: Splits, tables: tuple[pd.DataFrame, pd.DataFrame], n: int | None = None):
    """Row indices (into the users and items tables) of the first ``n`` training interactions."""
    train = splits.train if n is None else splits.train.iloc[:n]
    users, items = tables
    user_rows = pd.Index(users["user_id"]).get_indexer(train["user_id"])
    item_rows = pd.Index(items["item_id"]).get_indexer(train["item_id"])
    return torch.from_numpy(user_rows.astype(np.int64)), torch.from_numpy(item_rows.astype(np.int64))


# --- persistence --------------------------------------------------------------------------------


def test_json_round_trip_gives_the_same_spec_and_the_same_tensors(tmp_path, ml_spec, ml_splits, ml_tables):
    path = ml_spec.save(tmp_path / "feature_spec.json")
    loaded = FeatureSpec.load(path)

    assert loaded.to_dict() == ml_spec.to_dict()
    assert loaded.wide_size == ml_spec.wide_size and loaded.layout() == ml_spec.layout()
    users, items = ml_tables
    u, i = train_rows(ml_splits, ml_tables, 500)
    before = ml_spec.assemble(ml_spec.encode("user", users).take(u), ml_spec.encode("item", items).take(i))
    after = loaded.assemble(loaded.encode("user", users).take(u), loaded.encode("item", items).take(i))
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


# --- fit: the training split only ---------------------------------------------------------------


def test_fit_learns_from_training_entities_only(movielens_100k, movielens_features):
    splits = make_splits(movielens_100k, "temporal", "implicit")  # later users and items exist
    users = build_users_frame(movielens_100k, splits.train)
    items = build_items_frame(movielens_100k)
    fields, crosses = movielens_features()
    spec = FeatureSpec.fit(fields, crosses, splits.train, users, items)

    later = pd.concat([splits.val, splits.test])
    train_users, train_items = set(splits.train["user_id"]), set(splits.train["item_id"])
    new_users = sorted(set(later["user_id"]) - train_users)
    new_items = sorted(set(later["item_id"]) - train_items)
    assert new_users and new_items  # the temporal split has both on ML-100k

    assert spec.vocabularies["user_id"] == sorted(train_users)
    assert spec.vocabularies["item_id"] == sorted(train_items)
    seen_users = users[users["user_id"].isin(train_users)]
    assert spec.vocabularies["occupation"] == sorted(seen_users["occupation"].unique())
    seen_years = items[items["item_id"].isin(train_items)]["release_year"]
    assert spec.numeric_stats["release_year"] == pytest.approx([seen_years.mean(), seen_years.std(ddof=0)])

    user_ids = spec.encode("user", users[users["user_id"].isin(new_users)]).categorical[:, 0]
    item_ids = spec.encode("item", items[items["item_id"].isin(new_items)]).categorical[:, 0]
    assert user_ids.eq(0).all() and item_ids.eq(0).all()  # OOV
    known = spec.encode("user", users[users["user_id"].isin(train_users)]).categorical[:, 0]
    assert known.gt(0).all()


# --- one rule per feature kind ------------------------------------------------------------------


def test_min_count_counts_training_entities_not_interactions():
    users = pd.DataFrame({"user_id": list("123456"), "city": ["a", "a", "a", "b", "b", "c"]})
    items = pd.DataFrame({"item_id": ["x"]})
    train = pd.DataFrame({"user_id": ["6"] * 50 + list("12345"), "item_id": "x"})  # user 6 ("c") is busy
    spec = FeatureSpec.fit([Field("city", "user", min_count=2)], [], train, users, items)

    assert spec.vocabularies["city"] == ["a", "b"]
    assert spec.cardinality("city") == 3  # index 0 is shared by rare and unknown values
    encoded = spec.encode("user", pd.DataFrame({"city": ["a", "b", "c", "never seen"]}))
    assert encoded.categorical[:, 0].tolist() == [1, 2, 0, 0]


def test_standardize_uses_the_training_mean_and_std(ml_spec, ml_tables, ml_splits):
    _, items = ml_tables
    train_items = items[items["item_id"].isin(ml_splits.train["item_id"].unique())]
    column = [f.name for f in ml_spec.dense_fields("item")].index("release_year")
    encoded = ml_spec.encode("item", train_items).dense[:, column].double()
    has_year = torch.tensor(train_items["release_year"].notna().to_numpy())

    assert not has_year.all()  # ML-100k has movies without a year: they encode as the mean, 0
    assert encoded[~has_year].eq(0).all()
    assert encoded[has_year].mean().item() == pytest.approx(0.0, abs=1e-5)
    assert encoded[has_year].std(correction=0).item() == pytest.approx(1.0, abs=1e-5)


def test_bucketize_with_explicit_boundaries():
    ages = [17, 18, 24, 25, 49, 50, 55, 56, 90]
    users = pd.DataFrame({"user_id": [str(n) for n in range(len(ages))], "age": ages})
    boundaries = [18, 25, 35, 45, 50, 56]
    spec = fit_small([Field("age", "user", kind="numeric", transform="bucketize", boundaries=boundaries)],
                     users, pd.DataFrame({"item_id": ["x"]}))  # fmt: skip

    assert spec.cardinality("age") == len(boundaries) + 2  # missing, below 18, ..., 56 and over
    # Each bucket holds [lower, upper): 18 starts the second bucket.
    assert spec.encode("user", users).categorical[:, 0].tolist() == [1, 2, 2, 3, 5, 6, 6, 7, 7]
    missing = spec.encode("user", pd.DataFrame({"age": [np.nan]})).categorical[:, 0]
    assert missing.tolist() == [0]


def test_bucketize_with_training_quantiles():
    users = pd.DataFrame({"user_id": [str(n) for n in range(1000)], "score": np.arange(1000.0)})
    spec = fit_small([Field("score", "user", kind="numeric", transform="bucketize", num_buckets=4)],
                     users, pd.DataFrame({"item_id": ["x"]}))  # fmt: skip

    assert spec.numeric_stats["score"] == pytest.approx([249.75, 499.5, 749.25])
    buckets = spec.encode("user", users).categorical[:, 0]
    assert torch.bincount(buckets).tolist() == [0, 250, 250, 250, 250]  # equal-frequency, none missing


def test_missing_columns_encode_as_unknown_for_cold_start(ml_spec):
    users = ml_spec.encode("user", pd.DataFrame({"user_id": ["1", "a new user"], "gender": ["F", "F"]}))
    items = ml_spec.encode("item", pd.DataFrame({"item_id": ["1", "2"]}))

    names = [f.name for f in ml_spec.categorical_fields("user")]
    assert names == ["user_id", "age", "gender", "occupation", "zip_prefix"]
    assert users.categorical[:, names.index("user_id")].tolist()[1] == 0
    assert users.categorical[:, names.index("user_id")].tolist()[0] > 0
    assert users.categorical[:, names.index("gender")].gt(0).all()
    for name in ("age", "occupation", "zip_prefix"):
        assert users.categorical[:, names.index(name)].eq(0).all(), name
    assert users.bags["history"].eq(0).all()
    assert items.bags["genres"].eq(0).all() and items.dense.eq(0).all()  # no genres, mean year

    batch = ml_spec.assemble(users, items)
    assert batch["wide.cross"].eq(0).all()  # age, occupation, genres and history are all unknown
    gender_id = ml_spec.wide_offsets["gender"] + users.categorical[0, names.index("gender")]
    assert gender_id in batch["wide.user"][0]


def test_multi_hot_bag_keeps_the_first_values_and_pads_with_zero():
    items = pd.DataFrame({"item_id": ["x", "y", "z"], "tags": lists([["a", "b", "c"], ["b"], []])})
    spec = fit_small([Field("tags", "item", kind="multi_hot", max_length=2)],
                     pd.DataFrame({"user_id": ["u"]}), items)  # fmt: skip

    assert spec.vocabularies["tags"] == ["a", "b", "c"]
    assert spec.encode("item", items).bags["tags"].tolist() == [[1, 2], [2, 0], [0, 0]]


def test_history_keeps_the_most_recent_items_first():
    items = pd.DataFrame({"item_id": ["i1", "i2", "i3", "i4"]})
    users = pd.DataFrame({"user_id": ["u", "v"], "history": lists([["i1", "i2", "i3", "i4"], ["i2"]])})  # oldest first
    fields = [Field("history", "user", kind="history", max_length=2), Field("item_id", "item")]
    spec = fit_small(fields, users, items)

    assert spec.cardinality("history") == spec.cardinality("item_id") == 5  # shares the item vocabulary
    assert spec.encode("user", users).bags["history"].tolist() == [[4, 3], [2, 0]]


# --- assemble: no leak, broadcasting ------------------------------------------------------------


def test_the_history_never_contains_the_candidate(ml_splits, ml_tables, movielens_features):
    fields, _ = movielens_features()
    keep = [f for f in fields if f.name in ("user_id", "history", "item_id")]
    spec = FeatureSpec.fit(keep, [Cross(["history", "item_id"])], ml_splits.train, *ml_tables)
    users, items = spec.encode("user", ml_tables[0]), spec.encode("item", ml_tables[1])
    u, i = train_rows(ml_splits, ml_tables)
    user, item = users.take(u), items.take(i)
    candidate = item.categorical[:, :1]  # (B, 1) item_id index
    raw_history = user.bags["history"]
    in_history = (raw_history == candidate).any(dim=1)
    assert in_history.float().mean() > 0.3  # many training positives are among the last 50 items

    batch = spec.assemble(user, item)
    history, cross = batch["user.bag.history"], batch["wide.cross"]
    assert not (history == candidate).any()
    assert torch.equal(history, raw_history.masked_fill(raw_history == candidate, 0))
    # One cross id per history entry, none where the candidate was: the pair (i, i) never appears.
    assert cross.shape == history.shape
    assert torch.equal(cross > 0, history > 0)
    history_ids = batch["wide.user"][:, -history.shape[1] :]
    assert torch.equal(history_ids > 0, history > 0)  # the wide one-hot ids of the history likewise


def test_one_user_row_broadcasts_against_the_catalogue(ml_spec, ml_encoded, ml_tables):
    users, items = ml_encoded
    row = int(ml_tables[0]["history"].list.len().argmax())  # a long history: the masking matters
    n = len(items)
    served = ml_spec.assemble(users.take(torch.tensor([row])), items)
    trained = ml_spec.assemble(users.take(torch.full((n,), row)), items)

    assert served.keys() == trained.keys()
    assert served["user.categorical"].shape[0] == 1  # the user side is not copied N times
    for key in trained:
        assert trained[key].shape[0] == n, key
        assert torch.equal(served[key].expand(n, -1), trained[key]), key


# --- the wide part: crosses and ids -------------------------------------------------------------


def test_exact_cross_gives_one_id_per_value_pair_inside_its_slice():
    users = pd.DataFrame({"user_id": ["u1", "u2"], "gender": ["F", "M"]})
    items = pd.DataFrame({"item_id": ["x", "y", "z"], "genre": ["drama", "comedy", "noir"]})
    fields = [Field("gender", "user"), Field("genre", "item")]
    spec = fit_small(fields, users, items, [Cross(["gender", "genre"]), Cross(["genre", "gender"])])

    u, i = torch.arange(2).repeat_interleave(3), torch.arange(3).repeat(2)  # all 6 pairs
    ids = spec.assemble(spec.encode("user", users).take(u), spec.encode("item", items).take(i))["wide.cross"]
    assert ids.shape == (6, 2)
    for column, name in enumerate(("gender_x_genre", "genre_x_gender")):
        start = spec.wide_offsets[name]
        assert spec.cross_sizes[name] == 6
        assert sorted(ids[:, column].tolist()) == list(range(start, start + 6))  # distinct, dense, own slice
    assert spec.wide_size == spec.wide_offsets["genre_x_gender"] + 6


def test_hashed_cross_stays_in_its_buckets_and_unknowns_are_padding():
    users = pd.DataFrame({"user_id": [f"u{n}" for n in range(20)]})
    items = pd.DataFrame({"item_id": [f"i{n}" for n in range(20)]})
    fields = [Field("user_id", "user"), Field("item_id", "item")]
    spec = fit_small(fields, users, items, [Cross(["user_id", "item_id"], num_buckets=50)])  # 400 pairs > 50

    u, i = torch.arange(20).repeat_interleave(20), torch.arange(20).repeat(20)
    ids = spec.assemble(spec.encode("user", users).take(u), spec.encode("item", items).take(i))["wide.cross"]
    start = spec.wide_offsets["user_id_x_item_id"]
    assert spec.cross_sizes["user_id_x_item_id"] == 50 and spec.wide_size == start + 50
    assert ids.ge(start).all() and ids.lt(start + 50).all()
    assert len(ids.unique()) > 40  # spread over the buckets
    a = spec.encode("user", users).categorical[u, 0]  # vocabulary indices, 1-based
    b = spec.encode("item", items).categorical[i, 0]
    p1, p2 = CROSS_PRIMES
    assert torch.equal(ids[:, 0], start + (a * p1 + b * p2) % 50)  # the documented hash, exactly

    stranger = spec.encode("user", pd.DataFrame({"user_id": ["nobody"]}))
    assert spec.assemble(stranger, spec.encode("item", items))["wide.cross"].eq(0).all()


def test_every_wide_id_lies_in_the_wide_table_and_padding_is_zero(ml_spec, ml_encoded, ml_splits, ml_tables):
    users, items = ml_encoded
    u, i = train_rows(ml_splits, ml_tables, 2000)
    negatives = torch.randint(len(items), (2000,), generator=torch.Generator().manual_seed(0))
    batch = ml_spec.assemble(users.take(torch.cat([u, u])), items.take(torch.cat([i, negatives])))

    for key in ("wide.user", "wide.item", "wide.cross"):
        assert batch[key].ge(0).all() and batch[key].lt(ml_spec.wide_size).all(), key
    # wide.item = [item_id, genres bag]: each genre id is the genre's index plus its offset, 0 for padding.
    genres, genre_ids = batch["item.bag.genres"], batch["wide.item"][:, 1:]
    assert genres.eq(0).any()
    assert torch.equal(genre_ids, torch.where(genres > 0, genres + ml_spec.wide_offsets["genres"], 0))
    # wide.cross = each cross's (La * Lb) ids in turn, every one inside its own slice of the table.
    end = 0
    for cross in ml_spec.crosses:
        width = math.prod(value_width(ml_spec, name, batch) for name in cross.fields)
        ids = batch["wide.cross"][:, end : end + width]
        start, size = ml_spec.wide_offsets[cross.name], ml_spec.cross_sizes[cross.name]
        assert ids.gt(0).any() and torch.where(ids > 0, (ids >= start) & (ids < start + size), True).all(), cross.name
        end += width
    assert end == batch["wide.cross"].shape[1]


def value_width(spec: FeatureSpec, name: str, batch: dict[str, torch.Tensor]) -> int:
    field = next(f for f in spec.fields if f.name == name)
    return batch[f"{field.side}.bag.{name}"].shape[1] if field.is_bag else 1


# --- bad declarations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda: Field("mood", "user", kind="text"), "'mood': unknown kind 'text'"),
        (lambda: Field("mood", "movie"), "'mood': side must be 'user' or 'item', got 'movie'"),
        (lambda: Field("mood", "item", kind="history"), "'mood': history is a user-side feature"),
        (lambda: Field("mood", "user", kind="numeric", transform="log"), "'mood': transform must be"),
        (lambda: Cross(["gender"]), "exactly two fields"),
    ],
)
def test_bad_declarations_are_refused_with_the_name(declare, message):
    with pytest.raises(ValueError, match=message):
        declare()


USERS = pd.DataFrame({"user_id": ["1", "2"], "gender": ["F", "M"], "age": [20.0, 30.0]})
ITEMS = pd.DataFrame({"item_id": ["x"]})


@pytest.mark.parametrize(
    ("fields", "crosses", "message"),
    [
        ([Field("gender", "user"), Field("gender", "item")], [], r"unique.*'gender'"),
        ([Field("gender", "user")], [Cross(["gender", "genres"])], "unknown feature 'genres'"),
        ([Field("gender", "user"), Field("age", "user", kind="numeric")], [Cross(["gender", "age"])],
         "'age' is a standardized number"),  # fmt: skip
    ],
)
def test_bad_feature_sets_are_refused_at_fit(fields, crosses, message):
    with pytest.raises(ValueError, match=message):
        fit_small(fields, USERS, ITEMS, crosses)


def test_a_feature_column_missing_from_the_table_names_the_column_and_the_feature():
    with pytest.raises(DataError, match=r"column 'zip_code': missing; feature 'zip_prefix' reads it") as error:
        fit_small([Field("zip_prefix", "user", column="zip_code")], USERS, ITEMS)
    assert error.value.column == "zip_code"
