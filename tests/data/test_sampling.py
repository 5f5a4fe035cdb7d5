"""Negative sampling for implicit feedback: never a training positive, seeded, fresh every epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from wdrec.data.datamodule import InteractionDataModule, TrainBatches
from wdrec.data.sampling import NegativeSampler
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
    sampler = NegativeSampler(users, items, NUM_ITEMS, distribution)
    asked = users.repeat(2)  # ~200k draws, weighted towards heavy users (the hardest to sample for)

    kept_users, drawn = sampler.sample(asked, torch.Generator().manual_seed(0))

    assert torch.equal(kept_users, asked)  # nobody on ML-100k has rated everything: no draw is dropped
    assert drawn.min() >= 0 and drawn.max() < NUM_ITEMS
    assert not np.isin(keys(kept_users, drawn), keys(users, items)).any()


def test_popularity_draws_follow_item_counts_and_uniform_draws_do_not(positives):
    users, items = positives
    counts = torch.bincount(items, minlength=NUM_ITEMS).numpy()
    asked = users[torch.randint(len(users), (100_000,), generator=torch.Generator().manual_seed(1))]

    def correlation(distribution: str) -> float:
        _, drawn = NegativeSampler(users, items, NUM_ITEMS, distribution).sample(
            asked, torch.Generator().manual_seed(2)
        )
        return spearmanr(torch.bincount(drawn, minlength=NUM_ITEMS).numpy(), counts).statistic

    assert correlation("popularity") > 0.5
    # Uniform draws ignore popularity; popular items are drawn *less*, being more often a positive.
    assert correlation("uniform") < 0.0


def test_same_generator_seed_same_draws(positives):
    users, items = positives
    sampler = NegativeSampler(users, items, NUM_ITEMS, "popularity")

    def draw(seed: int) -> torch.Tensor:
        return sampler.sample(users[:5000], torch.Generator().manual_seed(seed))[1]

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_a_user_with_every_item_gets_no_negative_and_the_draw_ends():
    items = torch.arange(5)
    sampler = NegativeSampler(torch.cat([torch.zeros(5), torch.ones(1)]), torch.cat([items, torch.tensor([0])]), 5)

    users, drawn = sampler.sample(torch.tensor([0, 1, 0, 1, 0]), torch.Generator().manual_seed(0))

    assert users.tolist() == [1, 1]  # user 0's draws are dropped, not retried forever
    assert drawn.ne(0).all()


def test_unknown_distribution_is_refused():
    with pytest.raises(ValueError, match="negative_sampling must be 'uniform' or 'popularity', got 'zipf'"):
        NegativeSampler(torch.zeros(1), torch.zeros(1), 3, "zipf")


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
    batches = TrainBatches(rows, datamodule.sampler, negatives=3, batch_size=8000, seed=42, epoch=lambda: next(epochs))

    first_pos, first_neg = epoch_negatives(batches)  # epoch 0
    second_pos, second_neg = epoch_negatives(batches)  # epoch 1
    again_pos, again_neg = epoch_negatives(batches)  # epoch 0 again

    assert np.array_equal(first_pos, second_pos)  # every positive, every epoch
    assert len(first_neg) == len(second_neg) == 3 * len(first_pos)
    assert not np.array_equal(np.sort(first_neg), np.sort(second_neg))
    assert np.array_equal(first_neg, again_neg)  # deterministic given (seed, epoch)
