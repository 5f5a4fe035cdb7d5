"""One user against the catalogue, with the network's item-side half computed once per model.

``Scorer.score_user`` runs the whole network over ``FeatureSpec.assemble(user, catalogue)``:
about 20 ms for MovieLens-100k's 1,682 items on one core, most of it spent on work that
does not depend on the user. Wide&Deep splits along the user/item line, and each arch of
``wdrec.model.widedeep`` offers its two halves, so :class:`PrecomputedScorer` runs the
items' half once, with the network's and the spec's own code, and the user's per request:

- **wide** (``WideArch.partial_sums``): the items' ids and item × item crosses are summed
  per item at load, from ``assemble(blank user, items)`` (a user with no known feature
  crosses nothing); the user's ids and user × user crosses are one number per request, from
  ``assemble(user, blank item)``. A user × item cross needs both: its weights, laid out by
  ``CrossTable`` code, are summed per (user value, item) at load while that fits
  (:class:`CrossSums`), else gathered per request (:class:`CrossGather`: large catalogues).
- **deep** (``DeepArch.item_share`` / ``user_share`` / ``top``): the items' share of the
  first layer is computed at load, the user's per request, and the rest runs through the
  network's own blocks, fused for inference (``DeepArch.fused``).
- **known users**: their features are fixed in the bundle, so while it fits a budget their
  wide logits (U, N) and their share of the first deep layer (U, H) are computed at load.
- **history**: ``FeatureSpec`` leaves the scored item out of the user's histories. That
  changes only the items in the user's own histories (a few dozen at most): those rows are
  scored by the network's ``forward`` itself; for every other row the masking does nothing.

``serving/loader.py`` checks it against ``Scorer.score_user`` on real users before serving
with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from wdrec.data.features import Cross, SideTensors
from wdrec.export.scorer import Scorer


@dataclass(frozen=True)
class Limits:
    """What is precomputed (budgets in floats) and in what steps (rows)."""

    chunk: int = 16384  # catalogue or user rows per precompute step: bounds peak memory on large catalogues
    deep_block: int = 4096  # catalogue rows per step of the deep part at request time (activations stay in cache)
    cross_sums: int = 4_000_000  # a user × item cross is summed per (user value, item) up to this
    known_wide: int = 4_000_000  # the known users' wide logits for every item, up to this
    known_hidden: int = 16_000_000  # the known users' share of the first deep layer, up to this


@dataclass(frozen=True)
class CrossSums:
    """A user × item cross summed at load for each (user value, item): a request adds a row per value."""

    field: str  # the user-side field
    sums: Tensor  # (V, N); row 0 (unknown value, padding) is 0

    def per_item(self, values: Tensor, rows: Tensor | None) -> Tensor:
        """The cross's logit for each item (or ``rows``) given the user's ``values`` (L,): (N,)."""
        summed = self.sums.index_select(0, values[values > 0]).sum(0)
        return summed if rows is None else summed[rows]


@dataclass(frozen=True)
class CrossGather:
    """A user × item cross too large to sum at load: gathered per request from its weights by code."""

    field: str  # the user-side field
    user_codes: Tensor  # (V,) each user value's code
    item_codes: Tensor  # (N, Li) the codes of each item's values
    weights: Tensor  # CrossTable.by_code: the weight of each code sum

    def per_item(self, values: Tensor, rows: Tensor | None) -> Tensor:
        codes = self.user_codes[values[values > 0]]  # (Lu,)
        items = self.item_codes if rows is None else self.item_codes[rows]
        return torch.take(self.weights, items.unsqueeze(1) + codes.view(1, -1, 1)).sum((1, 2))


class PrecomputedScorer:
    """Scores one user (a 1-row :class:`SideTensors`) against the catalogue or some of its rows,
    as ``Scorer.score_user`` does, with the items' half of the network precomputed; or a block
    of users at once (:meth:`score_users`, batch recommendations: serving/batch.py).

    Args:
        scorer: the loaded bundle: network (in eval mode), spec, users and catalogue.
        limits: budgets and step sizes; the defaults suit catalogues up to millions of items.
    """

    def __init__(self, scorer: Scorer, limits: Limits | None = None) -> None:
        spec, net, items, users = scorer.spec, scorer.net, scorer.items, scorer.users
        self.spec, self.net, self.items = spec, net, items
        self.limits = limits = limits or Limits()
        self.blank_user, self.blank_item = spec.blank("user"), spec.blank("item")
        self.histories = [f.name for f in spec.history_fields()]
        if self.histories:  # item-id index -> catalogue row, to find the items in a user's histories
            candidate = spec.field_values(spec.item_id_field.name, items)[:, 0]  # (N,)
            self.row_of = torch.full((spec.cardinality(spec.item_id_field.name),), -1, dtype=torch.long)
            self.row_of[candidate[candidate > 0]] = torch.nonzero(candidate > 0).squeeze(1)
        self.deep = net.deep.fused() if net.deep is not None else None
        n = len(items)
        with torch.inference_mode():
            self.item_wide = torch.zeros(n) if net.wide is not None else None  # (N,) ids and item × item crosses
            self.item_hidden = None  # (N, H): the items' share of the first deep layer
            if self.deep is not None and self.deep.item_width:
                self.item_hidden = torch.zeros((n, net.config.hidden[0]))
            for start in range(0, n, limits.chunk):
                rows = torch.arange(start, min(n, start + limits.chunk))
                batch = spec.assemble(self.blank_user, items.take(rows))
                if self.item_wide is not None:
                    parts = net.wide.partial_sums(batch)
                    self.item_wide[rows] = parts["wide.item"] + parts["wide.cross"]
                if self.item_hidden is not None:
                    self.item_hidden[rows] = self.deep.item_share(batch)
            user_item = [c for c in spec.crosses if spec.field(c.fields[0]).side != spec.field(c.fields[1]).side]
            self.crosses = [self._plan(c) for c in user_item] if net.wide is not None else []
            self.known_wide, self.known_hidden = self._precompute_known(users)
        # Whether a known user's request needs no user-side work at all.
        self.known = (self.item_wide is None or self.known_wide is not None) and (self.deep is None or self.known_hidden is not None)

    # ------------------------------------------------------------------ setup
    def _plan(self, cross: Cross) -> CrossSums | CrossGather:
        """How a user × item cross is scored: its sums per (user value, item) while they fit the budget."""
        spec, table = self.spec, self.spec.cross_table(cross)
        user_first = spec.field(cross.fields[0]).side == "user"
        user_field, item_field = cross.fields if user_first else cross.fields[::-1]
        user_codes, item_codes = (table.left, table.right) if user_first else (table.right, table.left)
        item_codes = item_codes[spec.field_values(item_field, self.items)]  # (N, Li)
        weights = table.by_code(self.net.wide.weight.detach())
        if len(user_codes) * len(self.items) > self.limits.cross_sums:
            return CrossGather(user_field, user_codes, item_codes, weights)
        step = max(1, self.limits.chunk * 64 // max(1, item_codes.numel()))  # values per step: ~1M gathered weights
        sums = torch.cat([
            weights[user_codes[v : v + step].view(-1, 1, 1) + item_codes].sum(2) for v in range(0, len(user_codes), step)
        ])  # (V, N)
        return CrossSums(user_field, sums)

    def _precompute_known(self, users: SideTensors) -> tuple[Tensor | None, Tensor | None]:
        """The known users' wide logits (U, N) and share of the first deep layer (U, H), each None past its budget."""
        n, limits = len(self.items), self.limits
        want_wide = self.item_wide is not None and len(users) * n <= limits.known_wide
        want_hidden = (
            self.deep is not None and self.deep.user_width > 0 and len(users) * self.net.config.hidden[0] <= limits.known_hidden
        )
        constants, hidden = [], []
        for start in range(0, len(users) if want_wide or want_hidden else 0, limits.chunk):
            constant, share = self._user_parts(users.take(torch.arange(start, min(len(users), start + limits.chunk))))
            constants.append(constant)
            hidden.append(share)
        known_wide = self._wide_rows(users, torch.cat(constants), None) if want_wide else None
        return known_wide, torch.cat(hidden) if want_hidden else None

    # ---------------------------------------------------------------- scoring
    @torch.inference_mode()
    def score(
        self, user: SideTensors, rows: Tensor | None = None, user_row: int | None = None, skip: Tensor | None = None
    ) -> Tensor:
        """Scores (probabilities, or ratings for a regression model) for ``rows`` (default: all).

        ``user_row``: the user's row in the bundle's users table, when ``user`` is that row
        (its precomputed parts are used). ``skip``: a catalogue mask of rows whose scores the
        caller throws away (seen, excluded); those may come back inexact.
        """
        user_rows = None if user_row is None else torch.tensor([user_row])
        return self.score_users(user, user_rows, rows, None if skip is None else skip.unsqueeze(0))[0]

    @torch.inference_mode()
    def score_users(
        self, users: SideTensors, user_rows: Tensor | None = None, rows: Tensor | None = None, skip: Tensor | None = None
    ) -> Tensor:
        """A block of Bu users at once: (Bu, n) scores, row ``i`` what :meth:`score` gives user ``i``.

        ``user_rows`` (Bu,): the users' rows in the bundle's users table, when ``users`` are those
        rows. ``skip`` (Bu, N): per user, a catalogue mask as in :meth:`score`. The deep part runs
        ``deep_block`` (user, item) pairs at a time, so only the (Bu, n) logits grow with the block.
        """
        known = user_rows is not None
        constant, user_h = (None, None) if known and self.known else self._user_parts(users)
        wide = deep = None
        if self.item_wide is not None:
            if known and self.known_wide is not None:
                wide = self.known_wide[user_rows] if rows is None else self.known_wide[user_rows.unsqueeze(1), rows]
            else:
                wide = self._wide_rows(users, constant, rows)
        if self.deep is not None:
            if known and self.known_hidden is not None:
                user_h = self.known_hidden[user_rows]
            deep = self._deep(user_h.expand(len(users), -1), rows)
        out = self.net.over.join(wide, deep)  # (Bu, n)
        for i in range(len(users) if self.histories else 0):
            user = users if len(users) == 1 else users.take(torch.tensor([i]))
            positions, at = self._in_history(user, rows, None if skip is None else skip[i])
            if len(at):  # FeatureSpec masks these items out of the user's history: forward itself scores them
                out[i, positions] = self.net(self.spec.assemble(user, self.items.take(at)))
        return self.net.predictions(out)

    def _user_parts(self, users: SideTensors) -> tuple[Tensor | None, Tensor | None]:
        """The users' wide constant (Bu,): bias, own ids, user × user crosses; and their share of the
        first deep layer (Bu, H), or (1, H) without user-side deep inputs."""
        batch = self.spec.assemble(users, self.blank_item)  # the blank item crosses nothing
        constant = None
        if self.item_wide is not None:
            parts = self.net.wide.partial_sums(batch)
            constant = self.net.wide.bias + parts["wide.user"] + parts["wide.cross"]
        return constant, None if self.deep is None else self.deep.user_share(batch)

    def _wide_rows(self, users: SideTensors, constant: Tensor, rows: Tensor | None) -> Tensor:
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
        out = torch.empty((users, n), dtype=user_h.dtype)
        step = max(1, self.limits.deep_block // users)  # items per step
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
        none = torch.zeros(0, dtype=torch.long)
        if not self.histories:
            return none, none
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
