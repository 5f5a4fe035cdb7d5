"""Negative sampling for implicit feedback: items the user has not interacted with in training."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Distribution = Literal["uniform", "popularity"]


class NegativeSampler:
    """Draws items for users, never one of that user's training positives.

    Draws are vectorised: all items at once, then only the clashes are redrawn, for at most
    ``max_rounds`` rounds; a user who has interacted with (nearly) every item can be left
    without a negative, and such draws are dropped rather than looping forever.

    Args:
        users, items: the training positives, as row indices into the user table and the
            item catalogue.
        num_items: size of the catalogue (items are drawn from ``range(num_items)``).
        distribution: ``uniform`` over the catalogue, or ``popularity``: proportional to
            training count ** ``exponent`` (0.75 as in word2vec flattens the head).
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

    def sample(self, users: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """One negative item per entry of ``users``; returns (users kept, items)."""
        items = self.draw(users, generator)
        keep = items >= 0
        return users[keep], items[keep]

    def draw(self, users: Tensor, generator: torch.Generator) -> Tensor:
        """One negative item per entry of ``users``, in place; -1 where none was found."""
        items = self._draw(len(users), generator)
        pending = torch.nonzero(self.is_positive(users, items)).squeeze(1)  # draws that hit a positive
        for _ in range(self.max_rounds):
            if not len(pending):
                return items
            items[pending] = self._draw(len(pending), generator)
            pending = pending[self.is_positive(users[pending], items[pending])]  # only redrawn ones can clash
        return items.index_fill_(0, pending, -1)

    def _draw(self, n: int, generator: torch.Generator) -> Tensor:
        if self.cdf is None:
            return torch.randint(self.num_items, (n,), generator=generator)
        uniform = torch.rand(n, generator=generator, dtype=torch.float64)
        return torch.searchsorted(self.cdf, uniform).clamp_(max=self.num_items - 1)
