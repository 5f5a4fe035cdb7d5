"""Negative sampling for implicit feedback: one interface, a rule per data module.

A :class:`NegativeSampler` draws ``k`` items for each positive (user, item) row. What a
negative must not be depends on what the data module can know: in memory, every
interaction is at hand (:class:`UnseenItemSampler`, never an item the user interacted
with); out of core, only the row itself (:class:`OtherItemSampler`, never the row's own
item). :meth:`UnseenItemSampler.draw_fixed` is the same rule as a fixed sequence of tensor
ops, for batches built on the training device (no host sync, no data-dependent shape). Each sampler takes the generator its draws were defined with (torch or numpy), so
that a seed gives the same negatives as before the two shared this interface.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from functools import cached_property
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Distribution = Literal["uniform", "popularity"]
Generator = torch.Generator | np.random.Generator


class NegativeSampler(ABC):
    """Draws negatives from the catalogue ``range(num_items)``."""

    num_items: int

    @abstractmethod
    def draw(self, users: Tensor, items: Tensor, k: int, generator: Generator) -> Tensor:
        """(P, k) negative item rows for the positives (``users[i]``, ``items[i]``); -1 where none was found."""


class UnseenItemSampler(NegativeSampler):
    """Never one of the user's known positives; draws with a ``torch.Generator``.

    Draws are vectorised: all items at once, then only the clashes are redrawn, for at most
    ``max_rounds`` rounds; a user who has interacted with (nearly) every item can be left
    without a negative (-1), rather than looping forever.

    Args:
        users, items: the positives to avoid, as row indices into the user table and the
            item catalogue.
        num_items: size of the catalogue.
        distribution: ``uniform`` over the catalogue, or ``popularity``: proportional to
            count in ``items`` ** ``exponent`` (0.75 as in word2vec flattens the head).
    """

    def __init__(
        self,
        users: Tensor,
        items: Tensor,
        num_items: int,
        distribution: Distribution = "uniform",
        exponent: float = 0.75,
        max_rounds: int = 50,
    ) -> None:
        if distribution not in ("uniform", "popularity"):
            raise ValueError(f"negative_sampling must be 'uniform' or 'popularity', got {distribution!r}")
        self.num_items = num_items
        self.max_rounds = max_rounds
        self.positive_keys = torch.unique(users.long() * num_items + items.long())  # sorted
        self.cdf: Tensor | None = None
        if distribution == "popularity":
            weights = torch.bincount(items.long(), minlength=num_items).double() ** exponent
            self.cdf = torch.cumsum(weights / weights.sum(), 0)

    def is_positive(self, users: Tensor, items: Tensor) -> Tensor:
        keys = users.long() * self.num_items + items.long()
        if len(self.positive_keys) == 0:
            return torch.zeros_like(keys, dtype=torch.bool)
        where = torch.searchsorted(self.positive_keys, keys).clamp_(max=len(self.positive_keys) - 1)
        return self.positive_keys[where] == keys

    def draw(self, users: Tensor, items: Tensor, k: int, generator: torch.Generator) -> Tensor:
        """The user's positives are all it checks, so ``items`` is not read."""
        owners = users.repeat_interleave(k)
        drawn = self._uniform_or_popular(len(owners), generator)
        pending = torch.nonzero(self.is_positive(owners, drawn)).squeeze(1)  # draws that hit a positive
        for _ in range(self.max_rounds):
            if not len(pending):
                return drawn.view(-1, k)
            drawn[pending] = self._uniform_or_popular(len(pending), generator)
            pending = pending[self.is_positive(owners[pending], drawn[pending])]  # only redrawn ones can clash
        return drawn.index_fill_(0, pending, -1).view(-1, k)

    def draw_fixed(self, users: Tensor, k: int, generator: torch.Generator, rounds: int = 8) -> Tensor:
        """(P, k) negatives like :meth:`draw`, never -1, with no loop that waits on the data.

        Uniform: the user's r-th unseen item for a uniform r, found by one searchsorted: exactly
        uniform over the unseen items, as ``draw``'s redraws are. Popularity: ``rounds`` redraws
        of every clash at once, then any clash left takes the uniform unseen item. A user who
        has every item gets a uniform one (a positive labelled 0): the batch keeps its shape.
        The tensors must be on the generator's device (:meth:`to`).
        """
        owners = users.repeat_interleave(k)
        n = self.num_items
        start = torch.searchsorted(self.positive_keys, owners * n)
        free = n - (torch.searchsorted(self.positive_keys, (owners + 1) * n) - start)  # unseen items per owner
        r = (torch.rand(len(owners), generator=generator, device=owners.device, dtype=torch.float64)
             * torch.where(free > 0, free, n)).long()  # fmt: skip
        below = torch.searchsorted(self.gap_keys, owners * n + r, right=True) - start  # positives before it
        unseen = torch.where(free > 0, r + below, r)
        if self.cdf is None:
            return unseen.view(-1, k)
        drawn = self._uniform_or_popular(len(owners), generator)
        for _ in range(rounds):
            drawn = torch.where(self.is_positive(owners, drawn), self._uniform_or_popular(len(owners), generator), drawn)
        return torch.where(self.is_positive(owners, drawn), unseen, drawn).view(-1, k)

    @cached_property
    def gap_keys(self) -> Tensor:
        """Key j of user u's block as u * num_items + (unseen items below its item), sorted too: a
        user's r-th unseen item takes one searchsorted. Built on first use, where the keys live."""
        keys, n = self.positive_keys, self.num_items
        first = torch.searchsorted(keys, keys // n * n)  # where each key's user begins
        return keys - (torch.arange(len(keys), device=keys.device) - first)

    def to(self, device: torch.device | str) -> UnseenItemSampler:
        """A copy whose tables live on ``device``, for :meth:`draw_fixed` there."""
        moved = copy.copy(self)
        moved.__dict__.pop("gap_keys", None)  # built there, from the moved keys
        moved.positive_keys = self.positive_keys.to(device)
        moved.cdf = None if self.cdf is None else self.cdf.to(device)
        return moved

    def _uniform_or_popular(self, n: int, generator: torch.Generator) -> Tensor:
        if self.cdf is None:
            return torch.randint(self.num_items, (n,), generator=generator, device=generator.device)
        uniform = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device)
        return torch.searchsorted(self.cdf, uniform).clamp_(max=self.num_items - 1)


class OtherItemSampler(NegativeSampler):
    """Uniform over the catalogue, never the row's own item; draws with a numpy ``Generator``.

    All that a stream can check: with ``m`` positives per user in a catalogue of ``n``
    items, a negative is one of the user's other positives with probability about ``m / n``.
    An unknown item (row ``num_items``, outside the catalogue) excludes nothing.
    """

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items

    def draw(self, users: Tensor, items: Tensor, k: int, generator: np.random.Generator) -> Tensor:
        own = items.numpy()[:, None]  # (P, 1)
        n = self.num_items
        drawn = generator.integers(0, np.where(own < n, n - 1, n), size=(len(own), k))
        drawn += drawn >= own
        return torch.from_numpy(drawn)
