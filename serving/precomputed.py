"""One user against the catalogue, with the network's item-side half computed once per model.

``Scorer.score_user`` runs the whole network over ``FeatureSpec.assemble(user, catalogue)``:
about 20 ms for MovieLens-100k's 1,682 items on one core, most of it spent on work that
does not depend on the user. :class:`~wdrec.model.item_side.ItemSide` (the same code
that ranks the catalogue at validation) computes the items' half of the network once, with
the network's and the spec's own code, and the user's half per request: see its module for
how wide, deep, user × item crosses and histories split. :class:`PrecomputedScorer` adds
what only serving has:

- **known users**: their features are fixed in the bundle, so while it fits a budget their
  wide logits (U, N) and their share of the first deep layer (U, H) are computed at load;
- **probabilities**: scores go through the network's output (``WideDeep.predictions``).

``serving/loader.py`` checks it against ``Scorer.score_user`` on real users before serving
with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from wdrec.data.features import SideTensors
from wdrec.export.scorer import Scorer
from wdrec.model.item_side import ItemSide, Steps


@dataclass(frozen=True)
class Limits(Steps):
    """What is precomputed (budgets in floats) and in what steps (rows)."""

    known_wide: int = 4_000_000  # the known users' wide logits for every item, up to this
    known_hidden: int = 16_000_000  # the known users' share of the first deep layer, up to this


class PrecomputedScorer(ItemSide):
    """Scores one user (a 1-row :class:`SideTensors`) against the catalogue or some of its rows,
    as ``Scorer.score_user`` does, with the items' half of the network precomputed; or a block
    of users at once (:meth:`score_users`, batch recommendations: serving/batch.py).

    Args:
        scorer: the loaded bundle: network (in eval mode), spec, users and catalogue.
        limits: budgets and step sizes; the defaults suit catalogues up to millions of items.
    """

    def __init__(self, scorer: Scorer, limits: Limits | None = None) -> None:
        self.limits = limits = limits or Limits()
        super().__init__(scorer.spec, scorer.net, scorer.items, limits)
        with torch.inference_mode():
            self.known_wide, self.known_hidden = self._precompute_known(scorer.users)

    def _precompute_known(self, users: SideTensors) -> tuple[Tensor | None, Tensor | None]:
        """The known users' wide logits (U, N) and share of the first deep layer (U, H), each None past its budget."""
        n, limits = len(self.items), self.limits
        want_wide = self.item_wide is not None and len(users) * n <= limits.known_wide
        want_hidden = (
            self.deep is not None and self.deep.user_width > 0 and len(users) * self.net.config.hidden[0] <= limits.known_hidden
        )
        constants, hidden = [], []
        for start in range(0, len(users) if want_wide or want_hidden else 0, limits.chunk):
            constant, share = self.user_parts(users.take(torch.arange(start, min(len(users), start + limits.chunk))))
            constants.append(constant)
            hidden.append(share)
        known_wide = self.wide_rows(users, torch.cat(constants), None) if want_wide else None
        return known_wide, torch.cat(hidden) if want_hidden else None

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
        wide = user_h = None
        if user_rows is not None and self.known_wide is not None:
            wide = self.known_wide[user_rows] if rows is None else self.known_wide[user_rows.unsqueeze(1), rows]
        if user_rows is not None and self.known_hidden is not None:
            user_h = self.known_hidden[user_rows]
        return self.net.predictions(self.logits(users, rows, skip, wide, user_h))
