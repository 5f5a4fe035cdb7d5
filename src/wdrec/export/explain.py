"""Explanations that add up: a (user, item) score split into named contributions.

The network's logit is a sum (``wdrec.model.widedeep``)::

    logit = wide bias + Σ wide weight of each id in the row + deep logit

so each wide id's weight is a term of its own, named by ``FeatureSpec.wide_owner`` and
``FeatureSpec.value_label`` ("occupation=writer", "genres=Drama", "history: Star Wars × this
item", "item bias"; history and item ids by the catalogue's ``title`` when it has one). An id
that occurs twice in a row (a repeated history entry, two pairs that hash alike) is one term.

The deep logit is one term, or with ``split_deep`` three: the MLP is not linear, so its split
is a two-player Shapley value over its two inputs, the user's and the item's share of the first
layer (``DeepArch.user_share`` / ``item_share``), with an entity of no known feature
(``FeatureSpec.blank``) as the baseline. With ``D(u, i)`` the deep logit of user side ``u`` and
item side ``i`` and ``0`` the blank side::

    deep: baseline                = D(0, 0)
    deep: this user's features    = ½ [D(u, 0) − D(0, 0)] + ½ [D(u, i) − D(0, i)]
    deep: this item's features    = ½ [D(0, i) − D(0, 0)] + ½ [D(u, i) − D(u, 0)]

which sum to ``D(u, i)`` exactly; a user with no known feature gets 0 for its share (to rounding).

The ``top`` terms largest in magnitude are kept; ``rest`` is what the others add up to, so
``sum(term.value) + rest == logit``. ``logit`` is the network's output before its output
activation: the log-odds a binary model's sigmoid turns into the score, the rating itself for a
regression model (before the final ReLU when it is configured with ``output_activation: relu``).
Every number comes from the network's own methods (``WideArch.sum_ids``, ``DeepArch.user_share`` /
``item_share`` / ``top``, ``OverArch.deep_logit``) over ``FeatureSpec.assemble``: the very inputs
that are scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from wdrec.data.features import FeatureSpec, SideTensors
from wdrec.data.schema import ITEM_ID, USER_ID
from wdrec.export.scorer import Scorer
from wdrec.model.widedeep import WIDE_PARTS, DeepArch, WideDeep

TITLE = "title"  # the catalogue column that names items, when there is one


@dataclass(frozen=True)
class Term:
    name: str
    value: float
    kind: str  # "wide" | "deep"


@dataclass(frozen=True)
class Explanation:
    logit: float  # the network's output before the output activation (sigmoid, or a regression's ReLU)
    terms: list[Term]  # the largest contributions by magnitude, largest first
    rest: float  # the other contributions' sum: sum(t.value for t in terms) + rest == logit


@torch.inference_mode()
def explain(scorer: Scorer, user: SideTensors, rows: Tensor, top: int = 5, split_deep: bool = False) -> list[Explanation]:
    """Explanations of one user's (a 1-row SideTensors) scores for the catalogue ``rows``, in order.

    Args:
        scorer: the loaded bundle (network in eval mode, spec, catalogue).
        user: the user as scored: a known user's row, a cold start, or a user with no known feature.
        rows: catalogue rows (n,).
        top: terms kept per explanation (0: none, all in ``rest``).
        split_deep: the deep logit as three terms (baseline, user's share, item's share), else one.
    """
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    spec, net, n = scorer.spec, scorer.net, len(rows)
    if n == 0:
        return []
    batch = spec.assemble(user, scorer.items.take(rows))
    logit = torch.zeros(n)
    ids, values = torch.zeros((n, 0), dtype=torch.long), torch.zeros((n, 0))
    extra: list[tuple[str, Tensor, str]] = []  # terms that are not wide ids: (name, (n,) values, kind)
    if net.wide is not None:
        logit = logit + net.wide(batch)
        ids = torch.cat([batch[key].expand(n, -1) for key in WIDE_PARTS], dim=1)  # (n, W)
        ids, values = _merged(ids, net.wide.sum_ids(ids.unsqueeze(-1)))  # each id's weight, repeats summed
        extra.append(("wide bias", net.wide.bias.expand(n), "wide"))
    if net.deep is not None:
        logit = logit + net.over.deep_logit(net.deep(batch))
        extra += _deep_terms(spec, net, user, scorer.items.take(rows), batch, split_deep)
    names = _Names(scorer, batch, n)
    candidates = torch.cat([values, torch.stack([v.expand(n) for _, v, _ in extra], dim=1)], dim=1)  # (n, W + E)
    order = torch.sort(candidates.abs(), dim=1, descending=True, stable=True).indices[:, :top]
    explanations = []
    for r in range(n):
        terms = []
        for at in order[r].tolist():
            value = float(candidates[r, at])
            if value == 0.0:
                break  # the rest are zeros too
            if at < ids.shape[1]:
                terms.append(Term(names.wide(r, int(ids[r, at])), value, "wide"))
            else:
                name, _, kind = extra[at - ids.shape[1]]
                terms.append(Term(name, value, kind))
        total = float(logit[r])
        explanations.append(Explanation(total, terms, total - math.fsum(t.value for t in terms)))
    return explanations


def _merged(ids: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's distinct nonzero ids and their summed values, (n, W) with 0-padding (value 0)."""
    ids, order = torch.sort(ids, dim=1)
    values = values.gather(1, order)
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    run = starts.cumsum(1) - 1  # (n, W): each position's run
    summed = torch.zeros_like(values).scatter_add_(1, run, values)
    first = torch.zeros_like(ids).scatter_(1, run, ids)  # the run's id (every member is equal)
    return first, torch.where(first > 0, summed, 0.0)


def _deep_terms(
    spec: FeatureSpec, net: WideDeep, user: SideTensors, items: SideTensors, batch: dict[str, Tensor], split: bool
) -> list[tuple[str, Tensor, str]]:
    """The deep logit as one term, or as the baseline and the two sides' Shapley shares."""
    deep: DeepArch = net.deep
    u, i = deep.user_share(batch), _item_share(deep, batch)  # (Bu, H), (n, H)
    full = _deep_logit(net, u, i)
    if not split:
        return [("deep", full, "deep")]
    blank_user, blank_item = spec.blank("user"), spec.blank("item")
    u0 = deep.user_share(spec.assemble(blank_user, blank_item))  # (1, H)
    i0 = _item_share(deep, spec.assemble(blank_user, blank_item))
    base, user_only, item_only = _deep_logit(net, u0, i0), _deep_logit(net, u, i0), _deep_logit(net, u0, i)
    user_part = 0.5 * (user_only - base) + 0.5 * (full - item_only)
    item_part = full - base - user_part  # = ½ [D(0, i) − D(0, 0)] + ½ [D(u, i) − D(u, 0)], to rounding
    return [
        ("deep: baseline (no known feature)", base, "deep"),
        ("deep: this user's features", user_part, "deep"),
        ("deep: this item's features", item_part, "deep"),
    ]


def _item_share(deep: DeepArch, batch: dict[str, Tensor]) -> Tensor:
    return deep.item_share(batch) if deep.item_width else torch.zeros((1, deep.blocks[0].linear.out_features))


def _deep_logit(net: WideDeep, user_h: Tensor, item_h: Tensor) -> Tensor:
    return net.over.deep_logit(net.deep.top(user_h + item_h))


class _Names:
    """Human names of one batch's wide ids: a field's value, or a cross's pair of values in that row."""

    def __init__(self, scorer: Scorer, batch: dict[str, Tensor], n: int) -> None:
        self.spec, self.scorer, self.n = scorer.spec, scorer, n
        self.sides = {
            side: SideTensors(
                batch[f"{side}.categorical"],
                batch[f"{side}.dense"],
                {f.name: batch[f"{side}.bag.{f.name}"] for f in self.spec.bag_fields(side)},
            )
            for side in ("user", "item")
        }  # the assembled values: histories without the candidate
        self.crosses = {c.name: c for c in self.spec.crosses}

    def wide(self, row: int, wide_id: int) -> str:
        owner, index = self.spec.wide_owner(wide_id)
        cross = self.crosses.get(owner)
        if cross is None:
            return self._alone(owner, index)
        first, second = (self._values(name, row) for name in cross.fields)
        pairs = torch.nonzero(self.spec.cross_table(cross).ids(first.unsqueeze(1), second.unsqueeze(0)) == wide_id)
        named = [f"{self._in_cross(cross.fields[0], int(first[a]))} × {self._in_cross(cross.fields[1], int(second[b]))}"
                 for a, b in pairs.tolist()]  # fmt: skip
        return " / ".join(dict.fromkeys(named)) or owner  # several pairs: they share a hash bucket

    def _values(self, name: str, row: int) -> Tensor:
        values = self.spec.field_values(name, self.sides[self.spec.field(name).side])
        return values[row if values.shape[0] > 1 else 0]  # (L,)

    def _alone(self, name: str, index: int) -> str:
        fld = self.spec.field(name)
        if fld.column == ITEM_ID and fld.side == "item":
            return "item bias"
        if fld.column == USER_ID and fld.side == "user":
            return "user bias" if index else "user bias (unknown user)"
        if fld.kind == "history":
            return f"{name}: {self._item(index)}"
        return f"{name}={self.spec.value_label(name, index)}"

    def _in_cross(self, name: str, index: int) -> str:
        fld = self.spec.field(name)
        if fld.column == ITEM_ID and fld.side == "item":
            return "this item"
        if fld.column == USER_ID and fld.side == "user":
            return "this user"
        return self._alone(name, index)

    def _item(self, index: int) -> str:
        """An item-id vocabulary index as the item's title (else its id)."""
        item_id = self.spec.value_label(self.spec.item_id_field.name, index)
        items = self.scorer.bundle.items
        if TITLE in items.columns:
            row = self.scorer.item_index.get_indexer([item_id])[0]
            if row >= 0 and isinstance(items[TITLE].iloc[row], str) and items[TITLE].iloc[row]:
                return items[TITLE].iloc[row]
        return item_id
