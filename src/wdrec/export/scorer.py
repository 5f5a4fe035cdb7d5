"""Scoring with a bundle: the users and the catalogue encoded once, then the same
``FeatureSpec.assemble`` path as training, so a served score equals the offline score.

Used by the MLflow pyfunc model (pairs of ids) and by the HTTP service (one user against
the catalogue).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import torch
from torch import Tensor

from wdrec.data.features import FeatureSpec, SideTensors
from wdrec.data.io import arrow_column
from wdrec.data.schema import ITEM_ID, SEEN_COLUMN, USER_ID
from wdrec.export.bundle import Bundle


class UnknownItemsError(KeyError):
    """Item ids that are not in the model's catalogue."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(ids)
        self.ids = ids

    def __str__(self) -> str:
        shown = ", ".join(repr(i) for i in self.ids[:10])
        more = f" and {len(self.ids) - 10} more" if len(self.ids) > 10 else ""
        return f"unknown item ids: {shown}{more}"


class Scorer:
    """A loaded bundle, ready to score.

    Args:
        bundle: the bundle to serve.
        chunk_rows: rows per forward pass when scoring many (user, item) pairs.
    """

    def __init__(self, bundle: Bundle, chunk_rows: int = 65536) -> None:
        self.bundle = bundle
        self.spec: FeatureSpec = bundle.spec
        self.net = bundle.net.eval()
        self.chunk_rows = chunk_rows
        self.user_index = pd.Index(bundle.users[USER_ID].astype("str"))
        self.item_index = pd.Index(bundle.items[ITEM_ID].astype("str"))
        self.item_ids = self.item_index.to_numpy()
        self.items = self.spec.encode("item", bundle.items)
        # Known users, plus one last row for users the model has never seen (all features unknown).
        self.users = _append(self.spec.encode("user", bundle.users), self.encode_user_features({}))
        self.unknown_row = len(bundle.users)
        seen = arrow_column(bundle.users[SEEN_COLUMN])
        self._seen_offsets = np.asarray(seen.offsets)
        self._seen_rows = self.item_index.get_indexer(pc.list_flatten(seen).to_pandas()).astype(np.int64)

    @property
    def task(self) -> str:
        return self.net.config.task

    # ------------------------------------------------------------ lookups
    def user_row(self, user_id: str) -> int | None:
        row = self.user_index.get_indexer([str(user_id)])[0]
        return None if row < 0 else int(row)

    def item_rows(self, item_ids: list[str]) -> Tensor:
        rows = self.item_index.get_indexer([str(i) for i in item_ids])
        if (rows < 0).any():
            raise UnknownItemsError([str(item_ids[j]) for j in np.flatnonzero(rows < 0)])
        return torch.from_numpy(rows.astype(np.int64))

    def seen_rows(self, user_row: int) -> Tensor:
        """Catalogue rows of every item the user interacted with (training, validation, test)."""
        rows = self._seen_rows[self._seen_offsets[user_row] : self._seen_offsets[user_row + 1]]
        return torch.from_numpy(rows[rows >= 0])

    def seen_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(user row, catalogue row) of every interaction the bundle holds, for co-occurrence."""
        users = np.repeat(np.arange(len(self.user_index)), np.diff(self._seen_offsets))
        known = self._seen_rows >= 0
        return users[known], self._seen_rows[known]

    def encode_user_features(self, features: Mapping[str, Any]) -> SideTensors:
        """A cold-start user: unknown id, the given raw features (missing ones unknown)."""
        frame = pd.DataFrame([{USER_ID: "", **features}])
        return self.spec.encode("user", frame)

    # ------------------------------------------------------------ scoring
    @torch.inference_mode()
    def score_user(self, user: SideTensors, item_rows: Tensor | None = None) -> Tensor:
        """One user (a 1-row SideTensors) against the catalogue or the given rows: (N,)."""
        items = self.items if item_rows is None else self.items.take(item_rows)
        return self.net.predict(self.spec.assemble(user, items))

    @torch.inference_mode()
    def score_pairs(self, user_ids: list[str], item_ids: list[str]) -> np.ndarray:
        """Scores for (user, item) pairs in order; unknown users score as cold starts."""
        item_rows = self.item_rows(item_ids)
        user_rows = torch.from_numpy(self.user_index.get_indexer([str(u) for u in user_ids]).astype(np.int64))
        user_rows = torch.where(user_rows < 0, self.unknown_row, user_rows)
        scores = []
        for start in range(0, len(item_rows), self.chunk_rows):
            chunk = slice(start, start + self.chunk_rows)
            batch = self.spec.assemble(self.users.take(user_rows[chunk]), self.items.take(item_rows[chunk]))
            scores.append(self.net.predict(batch))
        return torch.cat(scores).float().numpy() if scores else np.zeros(0, dtype=np.float32)


def _append(table: SideTensors, row: SideTensors) -> SideTensors:
    """``table`` with ``row`` added at the end (bags padded to a common width)."""
    bags = {}
    for name, bag in table.bags.items():
        extra = row.bags[name]
        width = max(bag.shape[1], extra.shape[1])
        bags[name] = torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in (bag, extra)])
    return SideTensors(torch.cat([table.categorical, row.categorical]), torch.cat([table.dense, row.dense]), bags)
