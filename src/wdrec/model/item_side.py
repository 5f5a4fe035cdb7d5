"""Users against a whole catalogue, with the network's item-side half computed once.

Ranking a block of users against N items with ``forward`` over ``FeatureSpec.assemble``
repeats the items' half of the work for every user. Wide&Deep splits along the user/item
line, and each arch of ``wdrec.model.widedeep`` offers its two halves, so :class:`ItemSide`
runs the items' half once (per model: serving; per evaluation epoch: training's full
ranking) with the network's and the spec's own code, and the users' half per block:

- **wide** (``WideArch.partial_sums``): the items' ids and item × item crosses are summed
  per item once, from ``assemble(blank user, items)`` (a user with no known feature
  crosses nothing); the users' ids and user × user crosses are one number per user, from
  ``assemble(users, blank item)``. A user × item cross needs both: its weights, laid out by
  ``CrossTable`` code, are summed per (user value, item) while that fits
  (:class:`CrossSums`), else gathered per user (:class:`CrossGather`: large catalogues).
- **deep** (``DeepArch.item_share`` / ``user_share`` / ``top``): the items' share of the
  first layer is computed once, the users' per block, and the rest runs through the
  network's own blocks, fused for inference (``DeepArch.fused``: eval mode, so BatchNorm
  uses its running statistics).
- **history**: ``FeatureSpec`` leaves the scored item out of the user's histories. That
  changes only the items in the user's own histories (a few dozen at most): those rows are
  scored by the network's ``forward`` itself; for every other row the masking does nothing.

Used by ``WideDeepModule``'s full ranking at validation and test and by
``serving/precomputed.py``, which adds the known users' parts. Both are checked against
``forward``: tests/model/test_item_side.py, tests/serving/test_precomputed_property.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from wdrec.data.features import Cross, FeatureSpec, SideTensors
from wdrec.model.widedeep import WideDeep


@dataclass(frozen=True)
class Steps:
    """In what steps (rows) the items' half is computed and the users are scored."""

    chunk: int = 16384  # catalogue rows per precompute step: bounds peak memory on large catalogues
    deep_block: int = 4096  # (user, item) pairs per step of the deep part (activations stay in cache)
    cross_sums: int = 4_000_000  # a user × item cross is summed per (user value, item) up to this many floats


@dataclass(frozen=True)
class CrossSums:
    """A user × item cross summed once for each (user value, item): a user adds a row per value."""

    field: str  # the user-side field
    sums: Tensor  # (V, N); row 0 (unknown value, padding) is 0

    def per_item(self, values: Tensor, rows: Tensor | None) -> Tensor:
        """The cross's logit for each item (or ``rows``) given the user's ``values`` (L,): (N,)."""
        summed = self.sums.index_select(0, values[values > 0]).sum(0)
        return summed if rows is None else summed[rows]


@dataclass(frozen=True)
class CrossGather:
    """A user × item cross too large to sum at once: gathered per user from its weights by code."""

    field: str  # the user-side field
    user_codes: Tensor  # (V,) each user value's code
    item_codes: Tensor  # (N, Li) the codes of each item's values
    weights: Tensor  # CrossTable.by_code: the weight of each code sum

    def per_item(self, values: Tensor, rows: Tensor | None) -> Tensor:
        codes = self.user_codes[values[values > 0]]  # (Lu,)
        items = self.item_codes if rows is None else self.item_codes[rows]
        return torch.take(self.weights, items.unsqueeze(1) + codes.view(1, -1, 1)).sum((1, 2))


class ItemSide:
    """The items' half of ``net`` over the catalogue ``items``, computed at construction; scores
    blocks of users (:meth:`logits`) as ``net(spec.assemble(user, items))`` does, row for row.

    Build it again after the weights change. The network must be in eval mode. Tensors live on
    the catalogue's device.

    Args:
        spec: the features the network reads.
        net: the network, in eval mode.
        items: the encoded catalogue (N rows).
        steps: step sizes and the cross budget; the defaults suit catalogues up to millions of items.
    """

    @torch.inference_mode()
    def __init__(self, spec: FeatureSpec, net: WideDeep, items: SideTensors, steps: Steps | None = None) -> None:
        if net.training:
            raise ValueError("ItemSide needs the network in eval mode: BatchNorm folds its running statistics")
        self.spec, self.net, self.items = spec, net, items
        self.steps = steps = steps or Steps()
        self.device = device = items.categorical.device
        self.blank_user, self.blank_item = spec.blank("user").to(device), spec.blank("item").to(device)
        self.histories = [f.name for f in spec.history_fields()]
        if self.histories:  # item-id index -> catalogue row, to find the items in a user's histories
            candidate = spec.field_values(spec.item_id_field.name, items)[:, 0]  # (N,)
            self.row_of = torch.full((spec.cardinality(spec.item_id_field.name),), -1, dtype=torch.long, device=device)
            self.row_of[candidate[candidate > 0]] = torch.nonzero(candidate > 0).squeeze(1)
        self.deep = net.deep.fused() if net.deep is not None else None
        n = len(items)
        self.item_wide = torch.zeros(n, device=device) if net.wide is not None else None  # (N,) ids and item × item crosses
        self.item_hidden = None  # (N, H): the items' share of the first deep layer
        if self.deep is not None and self.deep.item_width:
            self.item_hidden = torch.zeros((n, net.config.hidden[0]), device=device)
        for start in range(0, n, steps.chunk):
            rows = torch.arange(start, min(n, start + steps.chunk), device=device)
            batch = spec.assemble(self.blank_user, items.take(rows))
            if self.item_wide is not None:
                parts = net.wide.partial_sums(batch)
                self.item_wide[rows] = parts["wide.item"] + parts["wide.cross"]
            if self.item_hidden is not None:
                self.item_hidden[rows] = self.deep.item_share(batch)
        user_item = [c for c in spec.crosses if spec.field(c.fields[0]).side != spec.field(c.fields[1]).side]
        self.crosses = [self._plan(c) for c in user_item] if net.wide is not None else []

    def _plan(self, cross: Cross) -> CrossSums | CrossGather:
        """How a user × item cross is scored: its sums per (user value, item) while they fit the budget."""
        spec, table = self.spec, self.spec.cross_table(cross, self.device)
        user_first = spec.field(cross.fields[0]).side == "user"
        user_field, item_field = cross.fields if user_first else cross.fields[::-1]
        user_codes, item_codes = (table.left, table.right) if user_first else (table.right, table.left)
        item_codes = item_codes[spec.field_values(item_field, self.items)]  # (N, Li)
        weights = table.by_code(self.net.wide.weight.detach())
        if len(user_codes) * len(self.items) > self.steps.cross_sums:
            return CrossGather(user_field, user_codes, item_codes, weights)
        step = max(1, self.steps.chunk * 64 // max(1, item_codes.numel()))  # values per step: ~1M gathered weights
        sums = torch.cat([
            weights[user_codes[v : v + step].view(-1, 1, 1) + item_codes].sum(2) for v in range(0, len(user_codes), step)
        ])  # (V, N)
        return CrossSums(user_field, sums)

    # ---------------------------------------------------------------- scoring
    @torch.inference_mode()
    def logits(
        self,
        users: SideTensors,
        rows: Tensor | None = None,
        skip: Tensor | None = None,
        wide: Tensor | None = None,
        user_h: Tensor | None = None,
    ) -> Tensor:
        """The output of ``forward`` (logits, or ratings for a regression model) of a block of Bu
        users against the catalogue's ``rows`` (default: all): (Bu, n).

        ``users`` carry the histories to score with (serving: the stored ones; evaluation: the
        window at the evaluation point). ``skip`` (Bu, N): per user, a catalogue mask of rows
        whose scores the caller throws away (seen, excluded); those may come back inexact.
        ``wide`` (Bu, n) and ``user_h`` (Bu, H): the users' wide logits and share of the first
        deep layer, when the caller has them (serving's known users); else computed here.
        """
        need_wide = self.item_wide is not None and wide is None
        need_hidden = self.deep is not None and user_h is None
        if need_wide or need_hidden:
            constant, share = self.user_parts(users)
            wide = self.wide_rows(users, constant, rows) if need_wide else wide
            user_h = share if need_hidden else user_h
        deep = None if self.deep is None else self._deep(user_h.expand(len(users), -1), rows)
        out = self.net.over.join(wide, deep)  # (Bu, n)
        for i in range(len(users) if self.histories else 0):
            user = users if len(users) == 1 else users.take(torch.tensor([i], device=self.device))
            positions, at = self._in_history(user, rows, None if skip is None else skip[i])
            if len(at):  # FeatureSpec masks these items out of the user's history: forward itself scores them
                out[i, positions] = self.net(self.spec.assemble(user, self.items.take(at)))
        return out

    def user_parts(self, users: SideTensors) -> tuple[Tensor | None, Tensor | None]:
        """The users' wide constant (Bu,): bias, own ids, user × user crosses; and their share of the
        first deep layer (Bu, H), or (1, H) without user-side deep inputs."""
        batch = self.spec.assemble(users, self.blank_item)  # the blank item crosses nothing
        constant = None
        if self.item_wide is not None:
            parts = self.net.wide.partial_sums(batch)
            constant = self.net.wide.bias + parts["wide.user"] + parts["wide.cross"]
        return constant, None if self.deep is None else self.deep.user_share(batch)

    def wide_rows(self, users: SideTensors, constant: Tensor, rows: Tensor | None) -> Tensor:
        """The wide logits (Bu, n) of a block of users with wide ``constant`` (Bu,), one user at a time."""
        values = {plan.field: self.spec.field_values(plan.field, users) for plan in self.crosses}
        return torch.stack([
            self._wide(constant[i], {name: v[i] for name, v in values.items()}, rows) for i in range(len(users))
        ])

    def _wide(self, constant: Tensor, values: dict[str, Tensor], rows: Tensor | None) -> Tensor:
        """The wide logits: the user's ``constant`` plus each item's share; ``values``: the user's
        values (L,) of each user × item cross's field."""
        per_item = self.item_wide if rows is None else self.item_wide[rows]
        for plan in self.crosses:
            per_item = per_item + plan.per_item(values[plan.field], rows)
        return constant + per_item

    def _deep(self, user_h: Tensor, rows: Tensor | None) -> Tensor:
        """The deep part's logits (Bu, n) from the users' shares of the first layer ``user_h`` (Bu, H),
        ``deep_block`` (user, item) pairs at a time.

        In blocks the (pairs, H) activations stay in cache and are reused; over the whole
        catalogue at once, a request allocated (and page-faulted) N x H floats per layer:
        about 1.5 GB at 1M items, which took most of its time (measured there: 2.5 s of CPU
        per request at once, 1.05 s in blocks; the same numbers, bit for bit).
        """
        n, users = (len(self.items) if rows is None else len(rows)), len(user_h)
        out = torch.empty((users, n), dtype=user_h.dtype, device=self.device)
        step = max(1, self.steps.deep_block // users)  # items per step
        for start in range(0, n, step):
            at = slice(start, min(n, start + step))
            if self.item_hidden is None:
                h = user_h.repeat_interleave(at.stop - at.start, dim=0)  # a fresh copy: top may overwrite it
            else:
                items = self.item_hidden[at] if rows is None else self.item_hidden[rows[at]]
                h = (user_h.unsqueeze(1) + items).view(-1, user_h.shape[1])  # (Bu * step, H)
            out[:, at] = self.net.over.deep_logit(self.deep.top(h)).view(users, -1)
        return out

    def _in_history(self, user: SideTensors, rows: Tensor | None, skip: Tensor | None) -> tuple[Tensor, Tensor]:
        """The scored items that sit in one of the user's histories, unless skipped: their positions
        among the scored rows, and their catalogue rows."""
        values = torch.cat([user.bags[name][0] for name in self.histories])
        found = self.row_of[values[values > 0]]
        found = torch.unique(found[found >= 0])
        positions = found
        if rows is not None:
            positions = torch.nonzero(torch.isin(rows, found)).squeeze(1)
            found = rows[positions]
        if skip is not None:
            keep = ~skip[found]
            positions, found = positions[keep], found[keep]
        return positions, found
