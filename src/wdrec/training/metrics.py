"""Full-ranking top-K metrics for the L1O protocol (DESIGN.md, "Evaluation protocols")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor
from torchmetrics import Metric


class EvaluatedData(Protocol):
    target: str  # implicit, binary or rating
    full_ranking: bool  # whether validation ranks the whole catalogue


@dataclass(frozen=True)
class Selection:
    """The validation metric that picks the best epoch, stops early, drives the scheduler's
    plateau and decides the registry's champion: derived from the task, so the four agree."""

    metric: str
    mode: Literal["max", "min"]


def selection_for(data: EvaluatedData) -> Selection:
    """NDCG@10 for implicit feedback ranked over the catalogue, RMSE for ratings, else AUC."""
    if data.target == "rating":
        return Selection("val_rmse", "min")
    if data.target == "implicit" and data.full_ranking:
        return Selection("val_ndcg_10", "max")
    return Selection("val_auc", "max")


class TopKRanking(Metric):
    r"""HR@K, NDCG@K and Recall@K over whole catalogues, averaged over users.

    Each :meth:`update` takes a block of ``U`` users by the full catalogue of ``N`` items.
    Items marked in ``exclude`` (seen in training) get score ``-inf`` and are never counted
    as relevant; the rest are ranked with one ``torch.topk`` over the block. Per user, with
    ``R`` the set of relevant (held-out) items left after exclusion and ``T`` the top ``K``:

    - HR@K = 1 if ``|R ∩ T| > 0`` else 0;
    - Recall@K = ``|R ∩ T| / |R|`` (the standard definition, not divided by ``min(|R|, K)``,
      so with more than ``K`` relevant items it cannot reach 1);
    - NDCG@K = DCG@K / IDCG@K with binary relevance, DCG@K = sum over top-K positions
      ``p = 1..K`` of ``rel_p / log2(p + 1)``, IDCG@K the same over ``min(|R|, K)`` hits.

    Users with no relevant item after exclusion are skipped: they count neither in the sums
    nor in the user count. If a user has fewer than ``K`` rankable items, the remaining
    top-K places hold excluded (never relevant) items. Ties in score are broken in the order
    ``torch.topk`` returns, which is deterministic for a given input and device but not
    necessarily by item index; with continuous model scores ties are rare.

    States are sums and a user count with ``dist_reduce_fx="sum"``, so the metric is exact
    under DDP and over any split of users into blocks. :meth:`compute` returns
    ``{"hr": ..., "ndcg": ..., "recall": ...}`` (0-dim float tensors, 0 when no user counted).

    Notation: U users in the block, N items in the catalogue, K = ``k``.

    Args:
        k: cut-off K; >= 1.

    Example::

        >>> metric = TopKRanking(k=2)
        >>> scores = torch.tensor([[0.9, 0.8, 0.1, 0.5]])          # (U, N)
        >>> relevant = torch.tensor([[False, False, False, True]])  # (U, N)
        >>> exclude = torch.tensor([[True, False, False, False]])   # (U, N)
        >>> metric.update(scores, relevant, exclude)   # ranking: item 1, item 3, item 2
        >>> {name: round(value.item(), 4) for name, value in metric.compute().items()}
        {'hr': 1.0, 'ndcg': 0.6309, 'recall': 1.0}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    hr_sum: Tensor
    ndcg_sum: Tensor
    recall_sum: Tensor
    users: Tensor

    def __init__(self, k: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"TopKRanking: k must be an int >= 1, got {k!r}")
        self.k = k
        for name in ("hr_sum", "ndcg_sum", "recall_sum"):
            self.add_state(name, default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("users", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, scores: Tensor, relevant: Tensor, exclude: Tensor | None = None) -> None:
        """Add one block of users.

        Args:
            scores: (U, N) float, higher ranks first.
            relevant: (U, N) bool, the held-out positives.
            exclude: (U, N) bool, items not to rank (seen in training); None excludes nothing.
        """
        if scores.dim() != 2:
            raise ValueError(f"TopKRanking: scores must be (U, N), got shape {tuple(scores.shape)}")
        if relevant.shape != scores.shape or relevant.dtype != torch.bool:
            raise ValueError(
                f"TopKRanking: relevant must be a bool tensor of shape {tuple(scores.shape)}, "
                f"got {relevant.dtype} {tuple(relevant.shape)}"
            )
        if exclude is not None and (exclude.shape != scores.shape or exclude.dtype != torch.bool):
            raise ValueError(
                f"TopKRanking: exclude must be a bool tensor of shape {tuple(scores.shape)}, "
                f"got {exclude.dtype} {tuple(exclude.shape)}"
            )
        num_items = scores.shape[1]
        if scores.shape[0] == 0 or num_items == 0:
            return

        scores = scores.float()
        if exclude is not None:
            scores = scores.masked_fill(exclude, float("-inf"))
            relevant = relevant & ~exclude
        n_rel = relevant.sum(dim=1)  # (U,)
        keep = (n_rel > 0).float()  # (U,) users with something to find; masked, not indexed (no sync)

        k = min(self.k, num_items)
        top = torch.topk(scores, k, dim=1, largest=True, sorted=True).indices  # (U, k)
        hits = relevant.gather(1, top).float()  # (U, k) 1 where a relevant item sits
        positions = torch.arange(2, k + 2, device=scores.device, dtype=torch.float32)
        discounts = 1.0 / torch.log2(positions)  # (k,) 1/log2(p + 1) for p = 1..k
        ideal = discounts.cumsum(0)  # (k,) IDCG for 1..k relevant items

        n_hits = hits.sum(dim=1)  # (U,)
        dcg = hits @ discounts  # (U,)
        idcg = ideal[n_rel.clamp(min=1, max=k) - 1]  # (U,)
        denom = n_rel.clamp(min=1).float()  # (U,) users without relevant items have n_hits = 0

        self.hr_sum += ((n_hits > 0).float() * keep).sum()
        self.ndcg_sum += (dcg / idcg * keep).sum()
        self.recall_sum += (n_hits / denom * keep).sum()
        self.users += (n_rel > 0).sum()

    def compute(self) -> dict[str, Tensor]:
        """Means over the users counted so far: ``{"hr", "ndcg", "recall"}``."""
        users = self.users.clamp(min=1).float()
        return {
            "hr": self.hr_sum / users,
            "ndcg": self.ndcg_sum / users,
            "recall": self.recall_sum / users,
        }
