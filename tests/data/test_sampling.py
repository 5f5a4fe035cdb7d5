"""Negative sampling for implicit feedback: never a training positive (in memory) or the row's own item
(out of core), seeded, fresh every epoch, placed after the positives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from wdrec.data.batches import TrainBatches, TrainingPlan, with_negatives
from wdrec.data.datamodule import InteractionDataModule
from wdrec.data.sampling import OtherItemSampler, UnseenItemSampler
from wdrec.data.sources.movielens import MovieLens

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NUM_ITEMS = 1682


@pytest.fixture(scope="module")
def datamodule(data_dir, movielens_features) -> InteractionDataModule:
    """ML-100k, leave-one-out, 3 sampled negatives per positive."""
    fields, crosses = movielens_features()
    dm = InteractionDataModule(MovieLens("100k"), fields, crosses, negatives=3, batch_size=800, data_dir=str(data_dir))
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def positives(datamodule) -> tuple[torch.Tensor, torch.Tensor]:
    """The training positives as (user row, item row) index tensors."""
    return datamodule.train_positives()


def keys(users: torch.Tensor, items: torch.Tensor) -> np.ndarray:
    return (users.long() * NUM_ITEMS + items.long()).numpy()


@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
def test_never_a_training_positive_of_that_user(positives, distribution):
    users, items = positives
    sampler = UnseenItemSampler(users, items, NUM_ITEMS, distribution)

    drawn = sampler.draw(users, items, 2, torch.Generator().manual_seed(0))  # ~200k draws, heavy users weigh most

    assert drawn.shape == (len(users), 2)
    assert drawn.min() >= 0 and drawn.max() < NUM_ITEMS  # nobody on ML-100k has rated everything: none is -1
    assert not np.isin(keys(users.repeat_interleave(2), drawn.flatten()), keys(users, items)).any()


def test_popularity_draws_follow_item_counts_and_uniform_draws_do_not(positives):
    users, items = positives
    counts = torch.bincount(items, minlength=NUM_ITEMS).numpy()
    asked = torch.randint(len(users), (100_000,), generator=torch.Generator().manual_seed(1))

    def correlation(distribution: str) -> float:
        sampler = UnseenItemSampler(users, items, NUM_ITEMS, distribution)
        drawn = sampler.draw(users[asked], items[asked], 1, torch.Generator().manual_seed(2)).flatten()
        return spearmanr(torch.bincount(drawn, minlength=NUM_ITEMS).numpy(), counts).statistic

    assert correlation("popularity") > 0.5
    # Uniform draws ignore popularity; popular items are drawn *less*, being more often a positive.
    assert correlation("uniform") < 0.0


def test_same_generator_seed_same_draws(positives):
    users, items = positives
    sampler = UnseenItemSampler(users, items, NUM_ITEMS, "popularity")

    def draw(seed: int) -> torch.Tensor:
        return sampler.draw(users[:5000], items[:5000], 1, torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_a_user_with_every_item_gets_no_negative_and_the_draw_ends():
    items = torch.arange(5)
    sampler = UnseenItemSampler(torch.cat([torch.zeros(5), torch.ones(1)]), torch.cat([items, torch.tensor([0])]), 5)

    drawn = sampler.draw(torch.tensor([0, 1, 0, 1, 0]), torch.zeros(5), 1, torch.Generator().manual_seed(0)).flatten()

    assert drawn[[0, 2, 4]].tolist() == [-1, -1, -1]  # user 0's draws are given up, not retried forever
    assert drawn[[1, 3]].gt(0).all()


@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
def test_fixed_draws_are_never_a_positive_and_never_missing(positives, distribution):
    """The device path's draws: the same rule as ``draw``, every draw filled (a batch keeps its shape)."""
    users, items = positives
    sampler = UnseenItemSampler(users, items, NUM_ITEMS, distribution)

    drawn = sampler.draw_fixed(users, 2, torch.Generator().manual_seed(0))

    assert drawn.shape == (len(users), 2)
    assert drawn.min() >= 0 and drawn.max() < NUM_ITEMS
    assert not np.isin(keys(users.repeat_interleave(2), drawn.flatten()), keys(users, items)).any()
    assert torch.equal(drawn, sampler.draw_fixed(users, 2, torch.Generator().manual_seed(0)))  # seeded


def test_fixed_uniform_draws_are_uniform_over_the_unseen_items():
    """User 0 holds items 1, 3 and 4 of 7, user 1 none, user 2 all: each gets a uniform item of the ones it may."""
    sampler = UnseenItemSampler(torch.tensor([0, 0, 0, 2, 2, 2, 2, 2, 2, 2]),
                                torch.tensor([1, 3, 4, 0, 1, 2, 3, 4, 5, 6]), 7)  # fmt: skip
    n = 20_000
    drawn = sampler.draw_fixed(torch.tensor([0, 1, 2]).repeat_interleave(n), 1, torch.Generator().manual_seed(5))
    counts = [torch.bincount(per_user, minlength=7) for per_user in drawn.view(3, n)]

    assert counts[0][[1, 3, 4]].sum() == 0 and counts[0][[0, 2, 5, 6]].min() > 0.9 * n / 4
    assert counts[1].min() > 0.9 * n / 7
    assert counts[2].min() > 0.9 * n / 7  # nothing is unseen: uniform, the batch keeps its shape


def test_the_sampler_moves_to_a_device_with_its_tables(positives):
    users, items = positives
    moved = UnseenItemSampler(users, items, NUM_ITEMS, "popularity").to("meta")

    assert {moved.positive_keys.device.type, moved.gap_keys.device.type, moved.cdf.device.type} == {"meta"}


def test_unknown_distribution_is_refused():
    with pytest.raises(ValueError, match="negative_sampling must be 'uniform' or 'popularity', got 'zipf'"):
        UnseenItemSampler(torch.zeros(1), torch.zeros(1), 3, "zipf")


def test_out_of_core_negatives_are_never_the_row_s_own_item():
    """What a stream can check: the row itself. An unknown item (row 5 of 5) excludes nothing."""
    sampler = OtherItemSampler(5)
    items = torch.tensor([0, 4, 2, 5])

    drawn = sampler.draw(torch.zeros(4, dtype=torch.long), items, 500, np.random.default_rng(0))

    assert drawn.shape == (4, 500) and drawn.min() >= 0 and drawn.max() < 5
    for row, own in enumerate(items.tolist()):
        expected = set(range(5)) - {own}
        assert set(drawn[row].tolist()) == expected, own
    again = sampler.draw(torch.zeros(4, dtype=torch.long), items, 500, np.random.default_rng(0))
    assert torch.equal(drawn, again)


@pytest.mark.parametrize("by_round", [False, True])
def test_negatives_follow_the_positives_and_copy_their_rows(by_round):
    rows = {"user": torch.tensor([7, 8]), "item": torch.tensor([1, 2]), "label": torch.ones(2), "position": torch.tensor([30, 40])}
    drawn = torch.tensor([[3, -1, 5], [6, 9, 4]])  # row 0: 3, -1 (none found), 5; row 1: 6, 9, 4

    batch = with_negatives(rows, drawn.T if by_round else drawn, by_round=by_round)

    owners = [0, 1, 1, 0, 1] if by_round else [0, 0, 1, 1, 1]  # round by round, or each row's in turn
    items = [3, 6, 9, 5, 4] if by_round else [3, 5, 6, 9, 4]
    assert batch["item"].tolist() == [1, 2, *items]
    assert batch["label"].tolist() == [1.0, 1.0] + [0.0] * 5
    assert batch["user"].tolist() == [7, 8, *(rows["user"][owners].tolist())]
    assert batch["position"].tolist() == [30, 40, *(rows["position"][owners].tolist())]  # the positive's moment


# --- through the datamodule ---------------------------------------------------------------------


def test_train_batches_hold_the_configured_negatives_per_positive(datamodule):
    batches = iter(datamodule.train_dataloader())
    for _ in range(5):
        labels = next(batches)["label"]
        positives, negatives = int(labels.eq(1).sum()), int(labels.eq(0).sum())
        assert positives == 800 // (1 + 3)  # batch_size counts the negatives
        assert negatives == 3 * positives


def epoch_negatives(batches: TrainBatches) -> tuple[np.ndarray, np.ndarray]:
    """(sorted keys of this epoch's positives, keys of its negatives in draw order)."""
    pos, neg = [], []
    for batch in batches:
        positive = batch["label"] > 0.5
        pos.append(keys(batch["user"][positive], batch["item"][positive]))
        neg.append(keys(batch["user"][~positive], batch["item"][~positive]))
    return np.sort(np.concatenate(pos)), np.concatenate(neg)


def test_fresh_negatives_every_epoch_and_the_same_for_the_same_epoch(datamodule):
    epochs = iter([0, 1, 0])
    rows = {name: column[:20_000] for name, column in datamodule.rows["train"].items()}
    plan = TrainingPlan(datamodule.sampler, negatives=3, batch_size=8000, seed=42, epoch=lambda: next(epochs))
    batches = TrainBatches(rows, plan)

    first_pos, first_neg = epoch_negatives(batches)  # epoch 0
    second_pos, second_neg = epoch_negatives(batches)  # epoch 1
    again_pos, again_neg = epoch_negatives(batches)  # epoch 0 again

    assert np.array_equal(first_pos, second_pos)  # every positive, every epoch
    assert len(first_neg) == len(second_neg) == 3 * len(first_pos)
    assert not np.array_equal(np.sort(first_neg), np.sort(second_neg))
    assert np.array_equal(first_neg, again_neg)  # deterministic given (seed, epoch)
