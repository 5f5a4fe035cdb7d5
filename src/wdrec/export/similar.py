"""Similar items: the catalogue items most like a given one, by who interacted with them (the
method served) or by the model's deep item vectors.

Two item-to-item similarities are built here from a loaded bundle (:class:`~wdrec.export.scorer.Scorer`):

- :class:`CooccurrenceSimilarity` (:data:`BEST`, served): item-item cosine over the interactions
  the bundle holds (the users' ``seen`` lists, ``Scorer.seen_pairs``): the users who interacted
  with both items, over the square root of each item's user count;
- :class:`DeepSimilarity`: cosine of the items' share of the first deep layer
  (``DeepArch.item_share`` over ``FeatureSpec.assemble(blank user, items)``: item id, genres and
  year embeddings through the network's first linear map).

Measured on MovieLens-100k (``benchmarks/similar_items.py``, docs/benchmarks.md "Similar items";
items with 20+ training interactions, top 10, a model after 4 of the default job's 9 epochs),
beside a third method, the model's own scores for a cold-start user whose histories hold just
the query item. Share of users' held-out items found among the neighbours of their last
training item: co-occurrence 0.104, model scores 0.075, deep vectors 0.060, random 0.006.
Share of neighbours sharing a genre: deep vectors 0.885 (genres are one of their inputs),
co-occurrence 0.682, model scores 0.466, random 0.355. Co-occurrence finds the next item best
by far, needs no training, and its neighbours share genres 1.9x as often as chance.

Cost and plan: a co-occurrence query counts the items of the query item's users, so it costs the
interactions it touches, not N x N (about 1 ms for ML-100k's most popular film); nothing is
precomputed but the two adjacency lists. :class:`SimilarItems` keeps each asked item's top 100
(LRU over ``cache`` items), so repeated queries cost a lookup. The deep vectors' query is a
(1, H) x (H, N) product. Every item's neighbours at once (the benchmark) is the same in blocks of rows.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Protocol

import torch
from torch import Tensor

from wdrec.export.scorer import Scorer


class Similarity(Protocol):
    name: str

    def rows(self, rows: Tensor) -> Tensor:
        """Similarity of each of ``rows`` (b,) to every catalogue item: (b, N)."""
        ...


class DeepSimilarity:
    """Cosine of the items' share of the first deep layer (``DeepArch.item_share``)."""

    name = "deep_item_share"

    @torch.inference_mode()
    def __init__(self, scorer: Scorer, chunk: int = 16384) -> None:
        deep = scorer.net.deep
        if deep is None or not deep.item_width:
            raise ValueError("this model has no deep item inputs: use CooccurrenceSimilarity")
        blank, items = scorer.spec.blank("user"), scorer.items
        parts = [
            deep.item_share(scorer.spec.assemble(blank, items.take(torch.arange(start, min(len(items), start + chunk)))))
            for start in range(0, len(items), chunk)
        ]
        self.vectors = torch.nn.functional.normalize(torch.cat(parts), dim=1)  # (N, H), unit rows

    def rows(self, rows: Tensor) -> Tensor:
        return self.vectors[rows] @ self.vectors.T  # (b, N)


class CooccurrenceSimilarity:
    """Item-item cosine over interactions: |users of a ∩ users of b| / sqrt(|users of a| · |users of b|).

    ``pairs``: (user indices, catalogue rows) of the interactions; default: every interaction the
    bundle holds (``Scorer.seen_pairs``). A pair counts once however often it repeats. Held as
    both adjacency lists (each item's users, each user's items); a row of the similarity counts
    the items of the query's users, so its cost is the interactions it touches, not N × U.
    """

    name = "cooccurrence"

    def __init__(self, scorer: Scorer, pairs: tuple[object, object] | None = None) -> None:
        users, items = scorer.seen_pairs() if pairs is None else pairs
        users, items = torch.as_tensor(users, dtype=torch.long), torch.as_tensor(items, dtype=torch.long)
        self.size = n = len(scorer.item_ids)
        width = int(users.max()) + 1 if len(users) else 1
        key = torch.unique(items * width + users)  # sorted by item, then user; one per pair
        self.item_ptr, self.item_users = _adjacency(key // width, key % width, n)
        by_user = torch.sort((key % width) * n + key // width).values
        self.user_ptr, self.user_items = _adjacency(by_user // n, by_user % n, width)
        counts = torch.diff(self.item_ptr).float()  # users per item
        self.inverse_root = torch.where(counts > 0, counts.clamp(min=1).rsqrt(), 0.0)  # (N,)

    def rows(self, rows: Tensor) -> Tensor:
        segment, users = _gather(self.item_ptr, self.item_users, rows)  # the query items' users
        segment, items = _gather(self.user_ptr, self.user_items, users, segment)  # and each one's items
        both = torch.bincount(segment * self.size + items, minlength=len(rows) * self.size).view(len(rows), self.size)
        return both.float() * self.inverse_root[rows].unsqueeze(1) * self.inverse_root.unsqueeze(0)  # (b, N)


def _adjacency(sources: Tensor, targets: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Adjacency lists from pairs sorted by source: offsets (n + 1,) and the targets."""
    return torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(sources, minlength=n).cumsum(0)]), targets


def _gather(ptr: Tensor, values: Tensor, rows: Tensor, segment: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The lists of ``rows`` concatenated, and for each value the segment it belongs to (``segment[i]`` of
    its row, default the row's position)."""
    starts, lengths = ptr[rows], ptr[rows + 1] - ptr[rows]
    at = torch.arange(int(lengths.sum())) + torch.repeat_interleave(starts - (lengths.cumsum(0) - lengths), lengths)
    owner = torch.arange(len(rows)) if segment is None else segment
    return torch.repeat_interleave(owner, lengths), values[at]


def neighbours(similarity: Similarity, rows: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` most similar items to each of ``rows`` (b,), the item itself left out: catalogue rows
    and similarities, (b, k) each, best first, equal similarities in catalogue order."""
    scores = similarity.rows(rows).clone()
    scores[torch.arange(len(rows)), rows] = -math.inf
    k = min(k, scores.shape[1] - 1)
    top = torch.topk(scores, k, dim=1).values[:, -1:] if k > 0 else scores[:, :0]
    order = torch.sort(torch.where(scores >= top, scores, -math.inf), dim=1, descending=True, stable=True).indices[:, :k]
    return order, scores.gather(1, order)


BEST = CooccurrenceSimilarity  # measured best (docs/benchmarks.md, "Similar items")
CACHED_K = 100  # neighbours kept per item asked: most requests ask for fewer


class SimilarItems:
    """Each catalogue item's most similar items by one :class:`Similarity` (default: :data:`BEST`),
    computed on first ask and kept for the ``cache`` items asked most recently.

    Args:
        scorer: the loaded bundle.
        similarity: the method; default ``BEST(scorer)``.
        cache: items whose neighbours are kept (least recently asked dropped first).
    """

    def __init__(self, scorer: Scorer, similarity: Similarity | None = None, cache: int = 4096) -> None:
        self.similarity = similarity or BEST(scorer)
        self.method = self.similarity.name
        self._top = lru_cache(maxsize=cache)(self._compute)

    def of(self, row: int, k: int) -> tuple[list[int], list[float]]:
        """The ``k`` items most similar to catalogue row ``row``, best first: their rows and similarities."""
        found, scores = self._top(row, max(k, CACHED_K))
        return found[:k], scores[:k]

    @torch.inference_mode()
    def _compute(self, row: int, k: int) -> tuple[list[int], list[float]]:
        found, scores = neighbours(self.similarity, torch.tensor([row]), k)
        return found[0].tolist(), scores[0].tolist()
