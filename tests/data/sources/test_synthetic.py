"""The synthetic generator: reproducible, exact in its counts, canonical, and worth learning from.

The signal tests hold out a random 20% of interactions and check that what a model could
know from the other 80% and the side features (the categories a user took, the user's
occupation) predicts the held-out rows better than chance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from wdrec.data.schema import ITEM_ID, RATING, STRING_LIST, TIMESTAMP, USER_ID, InteractionData
from wdrec.data.sources import synthetic
from wdrec.data.sources.base import InteractionSource
from wdrec.data.sources.synthetic import Synthetic

SIZE: dict[str, Any] = {"n_users": 2_000, "n_items": 500, "n_interactions": 40_000}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> InteractionData:
    return Synthetic(**SIZE, seed=7).load(tmp_path_factory.mktemp("unused"))


@pytest.fixture(scope="module")
def held_out(data: InteractionData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test): a random 80/20 split of the log, with category and occupation joined on."""
    users, items = _side_tables(data)
    log = data.interactions.merge(items[[ITEM_ID, "category"]], on=ITEM_ID)
    log = log.merge(users[[USER_ID, "occupation"]], on=USER_ID)
    test = np.random.default_rng(0).random(len(log)) < 0.2
    return log[~test], log[test]


def _side_tables(data: InteractionData) -> tuple[pd.DataFrame, pd.DataFrame]:
    assert data.users is not None and data.items is not None
    return data.users, data.items


def _frames(data: InteractionData) -> dict[str, pd.DataFrame]:
    users, items = _side_tables(data)
    return {"interactions": data.interactions, "users": users, "items": items}


def test_same_seed_gives_identical_tables(tmp_path: Path) -> None:
    first, second = (Synthetic(300, 100, 3_000, seed=5).load(tmp_path) for _ in range(2))
    for name, frame in _frames(first).items():
        pd.testing.assert_frame_equal(frame, _frames(second)[name], check_exact=True, obj=name)


def test_different_seeds_give_different_tables(tmp_path: Path) -> None:
    first, second = (Synthetic(300, 100, 3_000, seed=seed).load(tmp_path) for seed in (5, 6))
    for name, frame in _frames(first).items():
        assert not frame.equals(_frames(second)[name]), name


def test_without_ratings_only_drops_the_rating_column(tmp_path: Path) -> None:
    rated = Synthetic(300, 100, 3_000, seed=5).load(tmp_path)
    unrated = Synthetic(300, 100, 3_000, seed=5, with_ratings=False).load(tmp_path)
    assert not unrated.has_ratings
    pd.testing.assert_frame_equal(unrated.interactions, rated.interactions.drop(columns=RATING))
    pd.testing.assert_frame_equal(_side_tables(unrated)[1], _side_tables(rated)[1])


def test_is_a_source_with_origins(data: InteractionData) -> None:
    source = Synthetic(**SIZE, seed=7)
    assert isinstance(source, InteractionSource)
    assert source.name == "synthetic"
    assert set(data.origins) == {"interactions", "users", "items"}
    assert data.origins["interactions"].startswith(
        "synthetic(n_users=2000, n_items=500, n_interactions=40000, seed=7"
    )


@pytest.mark.parametrize(
    "size",
    [
        SIZE,
        {"n_users": 1, "n_items": 6, "n_interactions": 3},
        {"n_users": 40, "n_items": 7, "n_interactions": 120},  # every user at the cap: Gumbel top-k path
        {"n_users": 50, "n_items": 3_000, "n_interactions": 5_000},
    ],
)
def test_counts_are_exact_and_pairs_unique(size: dict[str, Any], tmp_path: Path) -> None:
    log = Synthetic(**size).load(tmp_path).interactions
    assert len(log) == size["n_interactions"]
    assert not log.duplicated([USER_ID, ITEM_ID]).any()
    per_user = log[USER_ID].value_counts()
    assert len(per_user) == size["n_users"]  # every user appears
    assert per_user.min() >= 3
    assert per_user.max() <= size["n_items"] // 2
    assert log[ITEM_ID].nunique() <= size["n_items"]


def test_rejection_and_gumbel_top_k_sample_alike(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Users are filled by rejection rounds or, near saturation, by Gumbel top-k: both are the
    same successive sampling, so forcing either path gives the same item mix and diversity."""

    def sample(dense_cost: float) -> pd.DataFrame:
        monkeypatch.setattr(synthetic, "DENSE_COST", dense_cost)
        data = Synthetic(4_000, 60, 40_000, seed=3).load(tmp_path)
        return data.interactions.merge(_side_tables(data)[1][[ITEM_ID, "category"]], on=ITEM_ID)

    rejection, dense = sample(0), sample(10**9)  # every user by rejection / by Gumbel top-k
    item_shares = rejection[ITEM_ID].value_counts(normalize=True), dense[ITEM_ID].value_counts(normalize=True)
    assert (item_shares[0] - item_shares[1]).abs().sum() / 2 < 0.025  # another seed: ~0.3
    diversity = [log.groupby(USER_ID)["category"].nunique().mean() for log in (rejection, dense)]
    assert abs(diversity[0] - diversity[1]) < 0.1  # dense without the item sigmoid: 0.25


def test_tables_are_canonical(data: InteractionData) -> None:
    log, (users, items) = data.interactions, _side_tables(data)
    assert list(log.columns) == [USER_ID, ITEM_ID, TIMESTAMP, RATING]
    for frame, column in [(log, USER_ID), (log, ITEM_ID), (users, USER_ID), (items, ITEM_ID)]:
        assert frame[column].dtype == "str", column
    assert log[TIMESTAMP].dtype == np.int64
    assert log[RATING].dtype == np.float64
    assert log[RATING].between(1, 5).all() and (log[RATING] % 1 == 0).all()
    assert set(log[USER_ID]) == set(users[USER_ID]) and users[USER_ID].is_unique
    assert set(log[ITEM_ID]) <= set(items[ITEM_ID]) and items[ITEM_ID].is_unique
    assert len(users) == SIZE["n_users"] and len(items) == SIZE["n_items"]

    assert users["age"].dtype == np.int64 and users["age"].between(16, 80).all()
    assert set(users["gender"]) == {"F", "M"}
    assert 10 <= users["occupation"].nunique() <= 20
    assert users["region"].nunique() > 1
    assert 10 <= items["category"].nunique() <= 30
    assert items["tags"].dtype == STRING_LIST
    tag_counts = items["tags"].list.len()
    assert tag_counts.between(1, 4).all() and set(tag_counts) == {1, 2, 3, 4}
    assert items["tags"].map(lambda tags: len(set(tags)) == len(tags)).all()
    assert items["release_year"].dtype == np.float64
    assert (items["title"] == "Item " + items[ITEM_ID]).all()


def test_timestamps_increase_along_each_user(data: InteractionData) -> None:
    log = data.interactions
    assert (log.groupby(USER_ID, sort=False)[TIMESTAMP].diff().dropna() >= 0).all()
    assert pd.Timestamp(int(log[TIMESTAMP].min()), unit="s").year >= 2015


def test_interactions_per_user_are_heavy_tailed(data: InteractionData) -> None:
    per_user = data.interactions[USER_ID].value_counts()
    assert per_user.max() > 5 * per_user.median()
    assert (per_user <= 5).mean() > 0.02


def test_item_popularity_follows_a_power_law(tmp_path: Path) -> None:
    def top_decile_share(exponent: float) -> float:
        source = Synthetic(3_000, 2_000, 30_000, popularity_exponent=exponent)
        counts = np.sort(source.load(tmp_path).interactions[ITEM_ID].value_counts().to_numpy())[::-1]
        return counts[: 2_000 // 10].sum() / counts.sum()

    assert top_decile_share(1.0) > 0.4
    assert top_decile_share(0.0) < top_decile_share(1.0) - 0.15


def test_users_return_to_the_categories_they_took(held_out: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """A held-out item's category is one the user took often in training, far more than by chance."""
    train, test = held_out
    per_category = train.groupby([USER_ID, "category"]).size().rename("taken").reset_index()
    per_user = train.groupby(USER_ID).size().rename("total")

    def mean_share(rows: pd.DataFrame) -> float:
        joined = rows.merge(per_category, on=[USER_ID, "category"], how="left").join(per_user, on=USER_ID)
        return float((joined["taken"].fillna(0) / joined["total"]).mean())

    # Chance: the same held-out categories dealt to random rows, which keeps category popularity.
    shuffled = test.assign(category=np.random.default_rng(1).permutation(test["category"].to_numpy()))
    assert mean_share(test) > 2 * mean_share(shuffled)


def test_occupation_predicts_category(held_out: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """P(category | occupation) from training beats P(category) on held-out rows (log-likelihood)."""
    train, test = held_out
    joint = train.groupby(["occupation", "category"]).size().rename("n").reset_index()
    joint = joint.join(train.groupby("occupation").size().rename("n_occupation"), on="occupation")
    joint["p_given"] = (joint["n"] + 1) / (joint["n_occupation"] + train["category"].nunique())
    marginal = (train.groupby("category").size() / len(train)).rename("p")
    rows = test.merge(joint, on=["occupation", "category"], how="inner").join(marginal, on="category")
    assert len(rows) > 0.95 * len(test)
    assert np.log(rows["p_given"] / rows["p"]).mean() > 0.08


def test_ratings_are_higher_in_the_users_favourite_categories(
    held_out: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """Beyond a user's mean, a held-out rating rises with how much of that category the user took."""
    train, test = held_out
    taken = train.groupby([USER_ID, "category"]).size().rename("taken").reset_index()
    per_user = train.groupby(USER_ID)[RATING].agg(["size", "mean"])
    rows = (
        test.merge(taken, on=[USER_ID, "category"], how="left")
        .join(per_user, on=USER_ID)
        .dropna(subset=["mean"])
    )
    share = rows["taken"].fillna(0) / rows["size"]
    assert np.corrcoef(share, rows[RATING] - rows["mean"])[0, 1] > 0.06
    # Ratings also carry user and item effects: the user's mean rating predicts the next one.
    assert np.corrcoef(rows["mean"], rows[RATING])[0, 1] > 0.2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n_users": 0}, "n_users must be at least 1, got 0"),
        ({"n_items": 5}, "n_items must be at least 6, got 5"),
        ({"n_users": 2.5}, "n_users must be an integer, got 2.5"),
        ({"n_interactions": True}, "n_interactions must be an integer, got True"),
        (
            {"n_users": 10, "n_items": 10, "n_interactions": 29},
            "n_interactions=29 must be at least 3 \\* n_users = 30",
        ),
        ({"n_users": 10, "n_items": 11, "n_interactions": 51}, "n_interactions=51 must not exceed .* = 50"),
        ({"seed": -1}, "seed must be at least 0, got -1"),
        ({"latent_dim": 0}, "latent_dim must be at least 1, got 0"),
        ({"popularity_exponent": -0.5}, "popularity_exponent must be a number from 0 to 2.0, got -0.5"),
        ({"popularity_exponent": 2.5}, "popularity_exponent must be a number from 0 to 2.0, got 2.5"),
        (
            {"popularity_exponent": float("nan")},
            "popularity_exponent must be a number from 0 to 2.0, got nan",
        ),
        ({"with_ratings": "yes"}, "with_ratings must be True or False, got 'yes'"),
    ],
)
def test_bad_arguments_are_refused_by_name(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Synthetic(**arguments)  # type: ignore[arg-type]
