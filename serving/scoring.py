"""One user against the catalogue, with every item-only part of the network computed once.

``Scorer.score_user`` runs the whole network over ``FeatureSpec.assemble(user, catalogue)``:
about 20 ms for MovieLens-100k's 1,682 items on one core, most of it spent on work that
does not depend on the user (the items' embeddings and their share of the first deep
layer, the items' wide weights) or on wide ids summed one EmbeddingBag at a time.

Wide&Deep splits cleanly along the user/item line, so :class:`CatalogueScorer` does that
work once per loaded model and leaves only the user's share per request:

- **wide**: ``bias + Σ w[user ids] + Σ w[item ids] + Σ w[cross ids]``. The item sum is
  precomputed per item; the user sum is one scalar, minus the candidate itself when it
  sits in the user's history (``FeatureSpec`` masks it out); a user × item cross reads
  a (user value, item) table of its sums, precomputed while that stays small (else it is a
  gather from a per-cross table, its hash split into a per-user-value and a per-item part).
- **deep**: the first layer is linear and already applied per side by ``DeepArch``; the
  item side ``W_item · x_item`` is precomputed (N, H), the user side is one row, and the
  rest of the MLP runs through the network's own blocks.
- **known users**: their features are fixed in the bundle, so while it fits a budget their
  wide logits (U, N) and their share of the first deep layer (U, H) are computed at load;
  a request for one runs the MLP and little else (cold starts take the general path).

It mirrors ``FeatureSpec`` (wide offsets, cross hashing, history masking), so it is only
trusted after :meth:`CatalogueScorer.verify` agrees with ``Scorer.score_user`` on real
users; the model store falls back to ``Scorer.score_user`` when it does not, or when the
spec uses a feature this file does not decompose (:class:`Unsupported`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wdrec.data.features import Cross, FeatureSpec, SideTensors
from wdrec.export.scorer import Scorer

CHUNK = 16384  # catalogue rows per precompute step, to bound peak memory on large catalogues
DEEP_BLOCK = 4096  # catalogue rows per step of the deep part at request time (activations stay in cache)
PER_VALUE_BUDGET = 4_000_000  # floats: a user-field × item cross is precomputed per (value, item) up to this
KNOWN_USER_BUDGET = 16_000_000  # floats: the known users' share of the first deep layer is precomputed up to this
KNOWN_WIDE_BUDGET = 4_000_000  # floats: the known users' wide logits for every item are precomputed up to this


class Unsupported(ValueError):
    """A feature layout this decomposition does not cover; score with Scorer.score_user."""


class _CrossTable:
    """One wide cross as ``table[left_code[a] + right_code[b]]``, zero when either side is 0.

    ``FeatureSpec.cross_codes`` splits a pair's id into a part per value; here without the
    cross's offset, so that a sum lies in ``[0, 2s)`` (hashed crosses wrap once), where the
    table holds the cross weights twice over. Index 0 (unknown / padding) maps to ``2s``,
    past every valid sum, where the table is 0.
    """

    def __init__(self, spec: FeatureSpec, cross: Cross, wide: Tensor) -> None:
        size, offset = spec.cross_sizes[cross.name], spec.wide_offsets[cross.name]
        left, right = spec.cross_codes(cross)
        sentinel = 2 * size
        self.left = torch.where(left >= 0, left - offset, sentinel)
        self.right = torch.where(right >= 0, right, sentinel)
        weights = wide[offset : offset + size]
        self.table = torch.cat([weights, weights, torch.zeros(2 * size + 1)])  # covers sums up to 4s


class _Layer:
    """A deep block for inference: BatchNorm folded into the linear map when it comes first.

    Eval-mode BatchNorm is ``x * scale + shift``; before the activation it folds into the
    linear layer (``W * scale``, ``b * scale + shift``), saving a pass over (N, H).
    """

    def __init__(self, block: nn.Module, weight: Tensor, bias: Tensor, scale: Tensor, finish: Callable[[Tensor], Tensor]) -> None:
        self.block, self.weight, self.bias, self.scale, self.finish = block, weight, bias, scale, finish

    def __call__(self, x: Tensor) -> Tensor:
        return self.finish(torch.addmm(self.bias, x, self.weight.t()))


def _fold(block: nn.Module) -> _Layer:
    linear, norm = block.linear, block.norm
    ones = torch.ones(linear.out_features)
    foldable = block.norm_first and isinstance(norm, nn.BatchNorm1d) and norm.running_var is not None
    if not foldable:  # the block's own code after the linear map
        return _Layer(block, linear.weight, linear.bias, ones, block.finish)
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps) if norm.affine else 1 / torch.sqrt(norm.running_var + norm.eps)
    shift = (norm.bias if norm.affine else 0) - norm.running_mean * scale
    act = block.act
    finish = torch.relu_ if isinstance(act, nn.ReLU) else act  # dropout is the identity in eval mode
    return _Layer(block, linear.weight * scale.unsqueeze(1), linear.bias * scale + shift, scale, finish)


class CatalogueScorer:
    """Scores one user (a 1-row :class:`SideTensors`) against the catalogue or some of its rows.

    Raises :class:`Unsupported` at construction when the spec holds a feature it does not
    decompose: a cross of a history with another user field. A history bag in the deep part
    is decomposed: the user's share of the first layer is computed once (for known users, at
    load), and again, without the candidate, for the few candidates that sit in the user's
    own history.
    """

    def __init__(self, scorer: Scorer) -> None:
        self.spec, self.net, self.items = scorer.spec, scorer.net, scorer.items
        spec, net = self.spec, self.net
        self.task = net.config.task
        self.relu_output = net.over.relu_output
        item_field = spec.item_id_field
        self.candidate = self.items.categorical[:, spec.categorical_fields("item").index(item_field)]  # (N,)
        self._check_supported()
        wide_user = [(j, spec.wide_offsets[f.name]) for j, f in enumerate(spec.categorical_fields("user")) if f.wide]
        self.user_columns = torch.tensor([j for j, _ in wide_user], dtype=torch.long)
        self.user_offsets = torch.tensor([o for _, o in wide_user], dtype=torch.long)
        n = len(self.items)
        with torch.inference_mode():
            # Item-side inputs of the network, taken from FeatureSpec.assemble itself (user-independent).
            blank = scorer.users.take(torch.tensor([scorer.unknown_row]))
            self.wide = None
            if net.wide is not None:
                weight = net.wide.weight  # an EmbeddingBag of width 1, or the (W,) weights themselves
                self.wide = (weight.weight if isinstance(weight, nn.Module) else weight).detach().reshape(-1).clone()
                self.wide[0] = 0.0  # id 0 is padding: left out of the sum
                self.wide_bias = net.wide.bias.detach().clone()
                self.item_wide = torch.zeros(n)
            self.item_hidden = None
            deep = net.deep
            if deep is not None:
                self.layers = [_fold(block) for block in deep.blocks]
                weight, scale = deep.blocks[0].linear.weight, self.layers[0].scale
                self.user_weight = weight[:, : deep.user_width] * scale.unsqueeze(1)  # (H, Du)
                self.deep_bias = self.layers[0].bias  # (H,)
                if weight.shape[1] > deep.user_width:
                    self.item_hidden = torch.zeros((n, weight.shape[0]))  # (N, H)
                # Deep user bags that FeatureSpec masks per candidate (histories).
                self.deep_histories = [name for name in deep.user.bag_names if spec._by_name[name].kind == "history"]
            for start in range(0, n, CHUNK):
                rows = torch.arange(start, min(n, start + CHUNK))
                batch = spec.assemble(blank, self.items.take(rows))
                if self.wide is not None:
                    self.item_wide[rows] = self._sum(batch["wide.item"])
                if self.item_hidden is not None:
                    item = F.linear(deep.item(batch), weight[:, deep.user_width :])  # (n, H)
                    self.item_hidden[rows] = item * self.layers[0].scale
            self.crosses = self._prepare_crosses() if self.wide is not None else []
            self.known_wide = None  # (U, N): each known user's wide logits (their features are fixed in the bundle)
            if self.wide is not None and len(scorer.users) * n <= KNOWN_WIDE_BUDGET:
                self.known_wide = torch.stack([
                    self._wide(scorer.users.take(torch.tensor([row])), None, self.candidate) for row in range(len(scorer.users))
                ])
            self.known_hidden = None  # (U, H): each known user's share of the first deep layer
            if deep is not None and deep.user_width and len(scorer.users) * weight.shape[0] <= KNOWN_USER_BUDGET:
                self.known_hidden = torch.cat([
                    self._user_hidden(scorer.users.take(torch.arange(start, min(len(scorer.users), start + CHUNK))))
                    for start in range(0, len(scorer.users), CHUNK)
                ])

    # ------------------------------------------------------------------ setup
    def _check_supported(self) -> None:
        spec = self.spec
        for cross in spec.crosses:
            sides = [spec._by_name[name].side for name in cross.fields]
            kinds = [spec._by_name[name].kind for name in cross.fields]
            if sides == ["user", "user"] and "history" in kinds:
                raise Unsupported(f"cross {cross.name!r} of a history with another user field")

    def _prepare_crosses(self) -> list[tuple]:
        """Per cross: how to score it per request (user × item) or its per-item sum (item × item)."""
        spec, plans = self.spec, []
        for cross in spec.crosses:
            table = _CrossTable(spec, cross, self.wide)
            first, second = (spec._by_name[name] for name in cross.fields)
            if first.side == second.side == "item":
                for start in range(0, len(self.items), CHUNK):
                    rows = slice(start, start + CHUNK)
                    a = self._item_values(first.name)[rows]
                    b = self._item_values(second.name)[rows]
                    codes = table.left[a].unsqueeze(2) + table.right[b].unsqueeze(1)  # (n, La, Lb)
                    self.item_wide[rows] += table.table[codes].sum((1, 2))
                continue
            if first.side == second.side == "user":
                plans.append(("user", cross, table))
                continue
            user_first = first.side == "user"
            user_field, item_field = (first, second) if user_first else (second, first)
            user_codes = table.left if user_first else table.right  # (V,)
            item_codes = (table.right if user_first else table.left)[self._item_values(item_field.name)]  # (N, Li)
            self_pairs = None
            if user_field.kind == "history":
                # The candidate is masked out of its own history: precompute the (candidate, item) pair sum.
                self_pairs = table.table[user_codes[self.candidate].unsqueeze(1) + item_codes].sum(1)  # (N,)
            card = spec.cardinality(user_field.name)
            if card * len(self.items) <= PER_VALUE_BUDGET:
                # The cross's sum for every (user value, item): a request adds up one row per user value.
                step = max(1, CHUNK * 64 // item_codes.numel())  # values per step: about 1M gathered weights
                per_value = torch.cat([
                    table.table[user_codes[v : v + step].view(-1, 1, 1) + item_codes].sum(2) for v in range(0, card, step)
                ])  # (V, N)
                per_value[0] = 0.0  # value 0 (unknown, padding) crosses nothing
                plans.append(("per_value", user_field, per_value, self_pairs))
                continue
            plans.append(("user_item", user_field, user_first, table, item_codes, self_pairs))
        return plans

    def _item_values(self, name: str) -> Tensor:
        fld = self.spec._by_name[name]
        if fld.is_bag:
            return self.items.bags[name]
        j = self.spec.categorical_fields("item").index(fld)
        return self.items.categorical[:, j : j + 1]

    @staticmethod
    def _user_values(spec: FeatureSpec, user: SideTensors, name: str) -> Tensor:
        fld = spec._by_name[name]
        if fld.is_bag:
            return user.bags[name][0]
        j = spec.categorical_fields("user").index(fld)
        return user.categorical[0, j : j + 1]

    def _sum(self, ids: Tensor) -> Tensor:
        return self.wide[ids].sum(1) if ids.shape[1] else torch.zeros(ids.shape[0])

    # ---------------------------------------------------------------- scoring
    @torch.inference_mode()
    def score(
        self, user: SideTensors, rows: Tensor | None = None, user_row: int | None = None, skip: Tensor | None = None
    ) -> Tensor:
        """Scores (probabilities, or ratings for a regression model) for ``rows`` (default: all).

        ``user_row``: the user's row in the bundle's users table, when ``user`` is that row
        (its precomputed wide logits and share of the deep part are used). ``skip``: a
        catalogue mask of rows whose scores the caller throws away (seen, excluded); those
        may come back inexact.
        """
        candidate = self.candidate if rows is None else self.candidate[rows]
        out = None
        if self.known_wide is not None and user_row is not None:
            out = self.known_wide[user_row] if rows is None else self.known_wide[user_row, rows]
        elif self.wide is not None:
            out = self._wide(user, rows, candidate)
        if self.net.deep is not None:
            deep = self._deep(user, rows, user_row, skip)
            out = deep if out is None else out + deep
        if self.relu_output:
            out = F.relu(out)
        return torch.sigmoid(out) if self.task == "binary" else out

    def _wide(self, user: SideTensors, rows: Tensor | None, candidate: Tensor) -> Tensor:
        spec, wide = self.spec, self.wide
        constant = self.wide_bias.clone()
        per_item = self.item_wide if rows is None else self.item_wide[rows]
        if len(self.user_columns):
            ids = user.categorical[0].index_select(0, self.user_columns) + self.user_offsets
            constant = constant + wide.index_select(0, ids).sum()
        for fld in spec.bag_fields("user"):
            if not fld.wide:
                continue
            bag = user.bags[fld.name][0]
            values = wide[torch.where(bag > 0, bag + spec.wide_offsets[fld.name], 0)]  # (L,)
            constant = constant + values.sum()
            if fld.kind == "history":  # minus the candidate's own entry, when it is in the history
                own = torch.zeros(spec.cardinality(fld.name)).index_add_(0, bag, values)
                own[0] = 0.0
                per_item = per_item - own.index_select(0, candidate)
        for plan in self.crosses:
            if plan[0] == "user":
                _, cross, table = plan
                a, b = (self._user_values(spec, user, name) for name in cross.fields)
                constant = constant + table.table[table.left[a].unsqueeze(1) + table.right[b].unsqueeze(0)].sum()
                continue
            user_field, self_pairs = plan[1], plan[-1]
            values = self._user_values(spec, user, user_field.name)  # (Lu,)
            values = values[values > 0]
            if plan[0] == "per_value":
                summed = plan[2].index_select(0, values).sum(0)  # (N,)
                per_item = per_item + (summed if rows is None else summed[rows])
            else:
                _, _, user_first, table, item_codes, _ = plan
                codes = (table.left if user_first else table.right)[values]  # (Lu,)
                item_codes = item_codes if rows is None else item_codes[rows]
                per_item = per_item + torch.take(table.table, item_codes.unsqueeze(1) + codes.view(1, -1, 1)).sum((1, 2))
            if self_pairs is not None and len(values):
                count = torch.zeros(spec.cardinality(user_field.name)).index_add_(0, values, torch.ones(len(values)))
                count[0] = 0.0
                pairs = self_pairs if rows is None else self_pairs[rows]
                per_item = per_item - count.index_select(0, candidate) * pairs
        return constant + per_item

    def _deep(self, user: SideTensors, rows: Tensor | None, user_row: int | None, skip: Tensor | None) -> Tensor:
        """The deep part's output logits (N,), ``DEEP_BLOCK`` rows at a time.

        In blocks the (rows, H) activations stay in cache and are reused; over the whole
        catalogue at once, a request allocated (and page-faulted) N x H floats per layer:
        about 1.5 GB at 1M items, which took most of its time (measured there: 2.5 s of CPU
        per request at once, 1.05 s in blocks; the same numbers, bit for bit).
        """
        n = len(self.candidate) if rows is None else len(rows)
        known = self.known_hidden is not None and user_row is not None
        user_h = self.known_hidden[user_row : user_row + 1] if known else self._user_hidden(user)  # (1, H)
        out = torch.empty(n, dtype=self.deep_bias.dtype)
        for start in range(0, n, DEEP_BLOCK):
            stop = min(n, start + DEEP_BLOCK)
            out[start:stop] = self._mlp(user_h, self._item_hidden(rows, slice(start, stop)), stop - start)
        # A candidate in the user's own (deep) history sees that history without itself, as
        # FeatureSpec masks it: rescore those few rows with the user's share recomputed.
        values = self._history_values(user)
        if len(values):
            candidate = self.candidate if rows is None else self.candidate[rows]
            rescore = torch.isin(candidate, values)
            if skip is not None:
                rescore &= ~(skip if rows is None else skip[rows])
            at = torch.nonzero(rescore).squeeze(1)
            if len(at):
                masked = self._user_hidden(user, without=values)  # (V, H): one row per history value
                user_rows = masked[torch.searchsorted(values, candidate[at])]
                out[at] = self._mlp(user_rows, self._item_hidden(rows, at), len(at))
        return out

    def _user_hidden(self, user: SideTensors, without: Tensor | None = None) -> Tensor:
        """Bias plus the users' share of the first deep layer, (B, H) for B users; with
        ``without`` (V,) and one user, one row per value, that value masked out of the user's
        deep histories: (V, H)."""
        deep = self.net.deep
        if not deep.user_width:
            return self.deep_bias.unsqueeze(0)
        bags = dict(user.bags)
        if without is not None:
            for name in self.deep_histories:
                bag = bags[name].expand(len(without), -1)
                bags[name] = bag.masked_fill(bag == without.unsqueeze(1), 0)
        batch = {"user.categorical": user.categorical, "user.dense": user.dense}
        batch.update({f"user.bag.{name}": bag for name, bag in bags.items()})
        return self.deep_bias + F.linear(deep.user(batch), self.user_weight)

    def _item_hidden(self, rows: Tensor | None, at: slice | Tensor) -> Tensor | None:
        """The items' precomputed share of the first deep layer at positions ``at`` of the scored rows."""
        if self.item_hidden is None:
            return None
        return self.item_hidden[at] if rows is None else self.item_hidden[rows[at]]

    def _mlp(self, user_h: Tensor, item_h: Tensor | None, n: int) -> Tensor:
        """The deep part from the first layer's pre-activation on: logits (n,)."""
        h = user_h + item_h if item_h is not None else user_h.expand(n, -1).clone()  # a new tensor
        h = self.layers[0].finish(h)
        for layer in self.layers[1:]:
            h = layer(h)
        return self.net.over.head(h).squeeze(-1)

    def _history_values(self, user: SideTensors) -> Tensor:
        """Sorted distinct item ids in the user's deep histories (0, padding, left out)."""
        if not self.deep_histories or not self.net.deep.user_width:
            return torch.zeros(0, dtype=torch.long)
        values = torch.cat([user.bags[name][0] for name in self.deep_histories])
        return torch.unique(values[values > 0])

    # ------------------------------------------------------------ validation
    def verify(self, scorer: Scorer, users: list[tuple[SideTensors, int | None]]) -> float:
        """Largest difference from ``Scorer.score_user`` over the catalogue for ``(user, user_row)`` pairs."""
        worst = 0.0
        for user, user_row in users:
            reference = scorer.score_user(user)
            worst = max(worst, float((self.score(user, user_row=user_row) - reference).abs().max()))
            rows = torch.arange(0, len(self.items), max(1, len(self.items) // 7))
            worst = max(worst, float((self.score(user, rows, user_row) - reference[rows]).abs().max()))
        return worst
