"""Recommendations and scores for one user of a :class:`~serving.served_model.ServedModel`.

A request scores the user against the whole catalogue (or the given candidates, or the
retriever's) in one batched pass, blanks out what it may not return (seen, excluded,
filtered) and takes the top K with ``torch.topk``, ties broken by catalogue order
(candidates: request order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from serving.catalogue import Scalar
from serving.served_model import ServedModel
from wdrec.export.explain import explain


@dataclass
class Recommendation:
    user_id: str
    items: list[dict[str, Any]]
    cold_start: bool
    model_version: str | None


def recommend(
    model: ServedModel,
    user_id: str,
    k: int,
    exclude_seen: bool = True,
    candidates: Sequence[str] | None = None,
    user_features: Mapping[str, Any] | None = None,
    exclude_items: Sequence[str] | None = None,
    filters: Mapping[str, Scalar | Sequence[Scalar]] | None = None,
    explain_terms: int | None = None,
) -> Recommendation:
    """Top ``k`` items for ``user_id`` by score, descending; fewer when fewer remain.

    Scored: the given ``candidates``, else the retriever's candidates (two-stage), else the
    whole catalogue. ``explain_terms``: add each item's ``explanation`` (wdrec/export/explain.py)
    with this many terms, the deep part split into its baseline and the user's and item's shares.
    """
    rows = None
    if candidates is not None:
        rows = model.catalogue.rows(list(dict.fromkeys(candidates)), "candidates")  # first occurrence kept
    excluded = model.catalogue.rows(exclude_items, "exclude_items") if exclude_items else None
    allowed = model.catalogue.filter_mask(filters) if filters else None
    user = model.user(user_id, user_features)

    blocked = None  # catalogue rows that may not be returned
    if (exclude_seen and len(user.seen)) or excluded is not None:
        blocked = torch.zeros(model.catalogue.size, dtype=torch.bool)
        if exclude_seen:
            blocked[user.seen] = True
        if excluded is not None:
            blocked[excluded] = True
    if allowed is not None:
        blocked = ~allowed if blocked is None else blocked | ~allowed
    if rows is None and model.retriever is not None:
        rows = model.retriever.candidates(user.seen, blocked, minimum=k)
    scores = model.score(user, rows, blocked)  # (N,) or (len(rows),)
    if blocked is not None:
        scores = scores.masked_fill(blocked if rows is None else blocked[rows], -math.inf)
    order = top_k(scores, k)
    picked = order.tolist() if rows is None else rows[order].tolist()
    items = scored_items(model, picked, scores[order].tolist())
    if explain_terms is not None and picked:
        explanations = explain(model.reference, user.features, torch.tensor(picked), explain_terms, split_deep=True)
        for item, explanation in zip(items, explanations, strict=True):
            item["explanation"] = asdict(explanation)
    return Recommendation(user_id, items, user.row is None, model.info.version)


def scored_items(model: ServedModel, rows: list[int], scores: list[float]) -> list[dict[str, Any]]:
    """The catalogue ``rows`` as response items: id, score and the catalogue's display fields."""
    catalogue = model.catalogue
    ids = catalogue.ids
    return [{"item_id": ids[r], "score": s, **catalogue.fields(r)} for r, s in zip(rows, scores, strict=True)]


def top_k(scores: Tensor, k: int) -> Tensor:
    """Positions of the ``k`` best finite scores, best first, equal scores in position order."""
    k = min(k, len(scores))
    if k == 0:
        return torch.zeros(0, dtype=torch.long)
    threshold = torch.topk(scores, k, sorted=False).values.min()
    if threshold == -math.inf:
        contenders = torch.nonzero(scores > -math.inf).squeeze(1)
    else:
        contenders = torch.nonzero(scores >= threshold).squeeze(1)  # ascending positions; ties past k included
    ranked = torch.sort(scores[contenders], descending=True, stable=True).indices[:k]
    return contenders[ranked]


def score(
    model: ServedModel, user_id: str, item_ids: Sequence[str], user_features: Mapping[str, Any] | None = None
) -> tuple[list[float], bool]:
    """Scores for ``item_ids`` in request order, and whether the user was a cold start.

    Each item is scored once: a repeated id gets the very same score (scored twice, its two
    rows may round differently in a batched matrix product, measured 1e-8 apart)."""
    rows = model.catalogue.rows(item_ids, "item_ids")
    user = model.user(user_id, user_features)
    if not len(rows):
        return [], user.row is None
    distinct, position = torch.unique(rows, return_inverse=True)
    return model.score(user, distinct)[position].tolist(), user.row is None
