"""Index batches, and the feature batches assembled from them on the device.

A loader yields index batches: ``{"user", "item", "label"}`` rows into the encoded entity
tables (plus ``start`` and ``position``, the row's history in a :class:`Timeline`), or a
block of users to rank against the catalogue. :func:`row_features` turns them into model
inputs with :meth:`FeatureSpec.assemble` once they are on their device, so a GPU receives
indices, not feature matrices; :func:`ranking_features` into the block's users' features.

Every rank yields the same number of batches, its rows split as evenly as possible
(:func:`batches_per_shard`), so under DDP no sample is dropped or repeated and no rank
waits on another. :class:`ResidentBatches` is the training path for rows kept on the
device: batches of one fixed shape, whole batches only (:func:`full_batches`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from wdrec.data.features import FeatureSpec, SideTensors
from wdrec.data.sampling import Generator, NegativeSampler, UnseenItemSampler
from wdrec.data.timeline import Timeline

NEGATIVE_DRAW = 1 << 20  # training negatives drawn at once (see TrainBatches)
Batch = dict[str, Tensor]


# ------------------------------------------------------------------ sharding
def batches_per_shard(rows: int, shards: int, per_batch: int) -> int:
    """Batches each of ``shards`` yields for ``rows`` rows: the largest shard's count."""
    return max(1, math.ceil(math.ceil(rows / shards) / per_batch))


def full_batches(rows: int, shards: int, per_batch: int) -> int:
    """Whole batches of ``per_batch`` rows that each of ``shards`` can take from ``rows`` rows, the same on all."""
    return rows // shards // per_batch


def even_chunks(index: Tensor, rank: int, world_size: int, per_batch: int) -> list[Tensor]:
    """This rank's share of ``index``, cut into as many batches as every other rank gets."""
    shard = index[rank::world_size].contiguous()
    return list(torch.tensor_split(shard, batches_per_shard(len(index), world_size, per_batch)))


@dataclass(frozen=True)
class TrainingPlan:
    """How one rank cuts an epoch of training rows into batches, whatever their source."""

    sampler: NegativeSampler
    negatives: int  # sampled per positive
    batch_size: int  # examples per batch on this device, negatives included
    seed: int
    epoch: Callable[[], int]  # read at each iteration: reseeds shuffling and negatives
    rank: int = 0
    world_size: int = 1

    @property
    def positives_per_batch(self) -> int:
        return max(1, self.batch_size // (1 + self.negatives))


# ---------------------------------------------------------------- negatives
def with_sampled_negatives(rows: Batch, sampler: NegativeSampler, negatives: int, generator: Generator) -> Batch:
    """``rows``, then ``negatives`` freshly sampled items per row, each row's in turn."""
    if not negatives:
        return rows
    return with_negatives(rows, sampler.draw(rows["user"], rows["item"], negatives, generator))


def with_negatives(rows: Batch, drawn: Tensor, by_round: bool = False) -> Batch:
    """``rows``, then their sampled negatives (label 0; -1 draws, where none was found, dropped).

    A negative copies its row's other columns: its user and its moment. ``drawn`` is (P, k),
    row i's k negatives, which follow one another; with ``by_round`` it is (k, P) and the
    negatives come round by round (every row's first, then every row's second, ...).
    """
    rounds, n = (drawn.shape[0], drawn.shape[1]) if by_round else (drawn.shape[1], drawn.shape[0])
    rows_of_draws = torch.arange(n, device=drawn.device)
    owner = rows_of_draws.repeat(rounds) if by_round else rows_of_draws.repeat_interleave(rounds)
    items = drawn.flatten()
    kept = items >= 0
    return negatives_after(rows, owner[kept], items[kept])


def negatives_after(rows: Batch, owner: Tensor, items: Tensor) -> Batch:
    """``rows``, then one negative (label 0) per entry: item ``items[j]`` with row ``owner[j]``'s other columns."""
    n = len(rows["label"])
    out = {key: torch.cat([values, values[owner]]) for key, values in rows.items()}
    out["item"][n:] = items
    out["label"][n:] = 0.0
    return out


# ----------------------------------------------------------- in memory
class TrainBatches(IterableDataset):
    """Positives shuffled per epoch, each batch topped up with fresh sampled negatives."""

    def __init__(self, rows: Batch, plan: TrainingPlan) -> None:
        self.rows, self.plan = rows, plan

    def __len__(self) -> int:
        return batches_per_shard(len(self.rows["label"]), self.plan.world_size, self.plan.positives_per_batch)

    def __iter__(self) -> Iterator[Batch]:
        plan, k = self.plan, self.plan.negatives
        # The same permutation on every rank (seeded by epoch), then disjoint shards.
        generator = torch.Generator().manual_seed(plan.seed * 1_000_003 + plan.epoch())
        order = torch.randperm(len(self.rows["label"]), generator=generator)
        chunks = even_chunks(order, plan.rank, plan.world_size, plan.positives_per_batch)
        sampling = torch.Generator().manual_seed(generator.initial_seed() * 31 + plan.rank)
        # Negatives in one vectorised draw per group of batches, about NEGATIVE_DRAW of them:
        # per batch, the draw's fixed costs add up; per epoch, 10M positives' negatives and the
        # draw's temporaries took 1 GB.
        group = max(1, NEGATIVE_DRAW // (plan.positives_per_batch * max(1, k)))
        for first in range(0, len(chunks), group):
            chunks_of_draw = chunks[first : first + group]
            if k:  # (positives, negatives)
                drawn_rows = torch.cat(chunks_of_draw)
                negatives = plan.sampler.draw(self.rows["user"][drawn_rows], self.rows["item"][drawn_rows], k, sampling)
            start = 0
            for chunk in chunks_of_draw:
                batch = {key: values[chunk] for key, values in self.rows.items()}
                if k:  # a negative shares its positive's user and point in time
                    batch = with_negatives(batch, negatives[start : start + len(chunk)])
                    start += len(chunk)
                yield batch


class ResidentBatches:
    """Training batches built where the rows live (the training device): shuffled, sharded,
    topped up with negatives, all in tensor ops with no host work and no host sync.

    Every batch has the same shape: ``positives_per_batch`` positives, then ``negatives`` per
    positive, each drawn by :meth:`UnseenItemSampler.draw_fixed` (never dropped). Each rank
    takes ``full_batches`` whole batches of its shard of the epoch's permutation; the rest
    (fewer than one batch per rank) waits for a later epoch, whose new permutation puts other
    rows there. ``torch.compile`` and CUDA graphs then see one shape. A plain iterable, not a
    DataLoader: it yields tensors already on the device, which Lightning's transfer leaves as
    they are, and feature assembly follows in ``on_after_batch_transfer``, there too.
    """

    def __init__(self, rows: Batch, plan: TrainingPlan) -> None:
        """``rows`` and ``plan.sampler`` (:meth:`UnseenItemSampler.to`) on the training device."""
        if not isinstance(plan.sampler, UnseenItemSampler):
            raise TypeError(f"resident batches draw with UnseenItemSampler.draw_fixed, not {type(plan.sampler).__name__}")
        self.rows, self.plan, self.sampler = rows, plan, plan.sampler
        self.device = rows["label"].device
        if len(self) == 0:
            raise ValueError(
                f"batch_size: {plan.positives_per_batch} positives per batch on each of {plan.world_size} "
                f"device(s), but only {len(rows['label'])} training rows; lower batch_size"
            )

    def __len__(self) -> int:
        return full_batches(len(self.rows["label"]), self.plan.world_size, self.plan.positives_per_batch)

    def __iter__(self) -> Iterator[Batch]:
        plan, k, per_batch = self.plan, self.plan.negatives, self.plan.positives_per_batch
        seed = plan.seed * 1_000_003 + plan.epoch()  # as TrainBatches: same permutation on every rank
        order = torch.randperm(len(self.rows["label"]), generator=self._generator(seed), device=self.device)
        mine = order[plan.rank :: plan.world_size][: len(self) * per_batch].view(len(self), per_batch)
        sampling = self._generator(seed * 31 + plan.rank)
        owner = torch.arange(per_batch, device=self.device).repeat_interleave(k)
        for chunk in mine:
            batch = {key: values[chunk] for key, values in self.rows.items()}
            if k:  # a negative shares its positive's user and point in time
                batch = negatives_after(batch, owner, self.sampler.draw_fixed(batch["user"], k, sampling).flatten())
            yield batch

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)


class PointwiseBatches(IterableDataset):
    """Fixed rows in order, sharded by rank: evaluation and prediction."""

    def __init__(self, rows: Batch, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.rows, self.batch_size, self.rank, self.world_size = rows, batch_size, rank, world_size

    def _chunks(self) -> list[Tensor]:
        return even_chunks(torch.arange(len(self.rows["label"])), self.rank, self.world_size, self.batch_size)

    def __len__(self) -> int:
        return len(self._chunks())

    def __iter__(self) -> Iterator[Batch]:
        for chunk in self._chunks():
            yield {key: values[chunk] for key, values in self.rows.items()}


class RankingBatches(IterableDataset):
    """Blocks of users, each to be scored against the whole catalogue.

    A batch carries the block's user rows plus its (user, item) pairs of relevant and of
    excluded items; the dense masks are built on the device.
    """

    def __init__(
        self,
        users: Tensor,
        bounds: dict[str, Tensor],
        relevant: dict[str, Tensor],
        exclude: dict[str, Tensor],
        users_per_batch: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.users, self.bounds, self.relevant, self.exclude = users, bounds, relevant, exclude
        self.users_per_batch, self.rank, self.world_size = users_per_batch, rank, world_size

    def _blocks(self) -> list[Tensor]:
        return even_chunks(self.users, self.rank, self.world_size, self.users_per_batch)

    def __len__(self) -> int:
        return len(self._blocks())

    def __iter__(self) -> Iterator[Batch]:
        for block in self._blocks():
            where = torch.searchsorted(self.users, block)
            batch = {"ranking_user": block, **{f"ranking_{k}": v[where] for k, v in self.bounds.items()}}
            for name, pairs in (("relevant", self.relevant), ("exclude", self.exclude)):
                inside = torch.isin(pairs["user"], block)
                batch[f"{name}_user"], batch[f"{name}_item"] = pairs["user"][inside], pairs["item"][inside]
            yield batch


# ------------------------------------------------------ features on the device
def row_features(spec: FeatureSpec, batch: Batch, users: SideTensors, items: SideTensors, timeline: Timeline | None) -> Batch:
    """Index batch → feature batch (the index columns kept), on the batch's device."""
    history = None if timeline is None else timeline.window(batch["start"], batch["position"], spec.history_length)
    return {**spec.assemble(users.take(batch["user"]), items.take(batch["item"]), history), **batch}


def ranking_features(spec: FeatureSpec, batch: Batch, users: SideTensors, timeline: Timeline, n_items: int) -> Batch:
    """A block of users to rank against the first ``n_items`` items: their features (``user.*``, one
    row per user) with their histories at the evaluation point, and (users, items) masks of the
    relevant and of the excluded pairs.

    The items' side is not repeated per user: the model computes its half of the network once per
    evaluation (``wdrec.model.item_side``) and pairs it with each block's users.
    """
    block = batch["ranking_user"]
    device = block.device
    history = timeline.window(batch["ranking_start"], batch["ranking_position"], spec.history_length)
    block_users = users.take(block) if history is None else spec.with_history(users.take(block), history)

    def mask(pairs_user: Tensor, pairs_item: Tensor) -> Tensor:
        out = torch.zeros((len(block), n_items), dtype=torch.bool, device=device)
        out[torch.searchsorted(block, pairs_user), pairs_item] = True
        return out

    return {
        **block_users.as_batch("user"),
        "relevant": mask(batch["relevant_user"], batch["relevant_item"]),
        "exclude": mask(batch["exclude_user"], batch["exclude_item"]),
    }
