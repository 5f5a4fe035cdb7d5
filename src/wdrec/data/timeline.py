"""Each user's positives in time order: the point-in-time ``history`` of every row."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from wdrec.data.features import FeatureSpec
from wdrec.data.schema import ITEM_ID, TIMESTAMP, USER_ID


class Timeline:
    """Each user's positives, oldest first, as flat item sequences, one per view.

    View ``train`` holds the training positives: the users' stored ``history`` lists are
    cut from it, and a training row's history is the slice that ends at the row's own
    time, so the model learns from what the user had done *before* each interaction (no
    label leaks through the history, and the end of a user's sequence is exactly what
    serving sees). View ``test`` adds the validation positives, which precede the test
    interactions, as the latest interactions precede a request in production.
    """

    def __init__(self, views: dict[str, list[pd.DataFrame]], user_row: pd.Index, spec: FeatureSpec) -> None:
        """``views``: each view's positives, in one or more tables (read as one, in order)."""
        items, self.starts, self.ends, self.keys, base = [], {}, {}, {}, 0
        indexed: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}  # per table: users, items, times
        for view, tables in views.items():
            for table in tables:
                if id(table) not in indexed:
                    times = table[TIMESTAMP].to_numpy() if TIMESTAMP in table.columns else None
                    indexed[id(table)] = (user_row.get_indexer(table[USER_ID]), spec.item_index(table[ITEM_ID]), times)
            parts = [indexed[id(table)] for table in tables]
            users = np.concatenate([p[0] for p in parts])
            times = None if any(p[2] is None for p in parts) else np.concatenate([p[2] for p in parts])
            order = timeline_order(users, times)
            users = users[order]
            offsets = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=len(user_row)))]) + base
            self.starts[view], self.ends[view] = offsets[:-1], offsets[1:]
            if times is not None:  # (user, time) of each entry: where a training row falls
                self.keys[view] = _time_keys(users, times[order])
            items.append(np.concatenate([p[1] for p in parts])[order])
            base = int(offsets[-1])
        self.items = torch.from_numpy(np.concatenate(items))

    def bounds(self, view: str, users: np.ndarray, at_time_of: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(start, position) of each row's history: all of the view, or what precedes each
        row of ``at_time_of`` (interactions at the same second excluded)."""
        start = self.starts[view][users]
        if at_time_of is None or view not in self.keys or TIMESTAMP not in at_time_of.columns:
            return start, self.ends[view][users]
        keys = _time_keys(users, at_time_of[TIMESTAMP].to_numpy())
        return start, np.searchsorted(self.keys[view], keys, side="left") + self.starts[view][0]

    def window(self, starts: Tensor, positions: Tensor, length: int) -> Tensor | None:
        """(B, length) item indices before ``positions``, oldest first, 0-padded on the left."""
        if length == 0:
            return None
        index = positions.unsqueeze(1) - length + torch.arange(length, device=positions.device)  # (B, L)
        return torch.where(index >= starts.unsqueeze(1), self.items[index.clamp(min=0)], 0)

    def to(self, device: torch.device) -> Timeline:
        moved = copy.copy(self)
        moved.items = self.items.to(device)
        return moved


def timeline_order(users: np.ndarray, times: np.ndarray | None) -> np.ndarray:
    """Positives ordered by (user, time), ties kept in log order: the one order used everywhere."""
    return np.lexsort((times, users) if times is not None else (users,))


def _time_keys(users: np.ndarray, times: np.ndarray) -> np.ndarray:
    """One sortable int64 per (user, time): user-major, then epoch seconds (< 2**34, year 2514)."""
    return users.astype(np.int64) * (1 << 34) + times.astype(np.int64)
