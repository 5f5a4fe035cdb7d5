"""Labels and train/validation/test splits, as DESIGN.md's evaluation protocols define them.

- ``l1o``: per user, ordered by (timestamp, item_id), the last interaction is test and
  the one before is validation; users with fewer than three interactions stay in train.
- ``random``: a seeded random 80/10/10 split of rows (with the ``binary`` target this
  is the PW protocol).
- ``temporal``: one global time cut: the oldest 80% train, then 10% / 10%.
- ``predefined``: the user's own train/val/test files.

Targets: ``implicit`` (every interaction is a positive; negatives are sampled),
``binary`` (a ``label`` column, or rating >= ``positive_threshold`` → 1 and
<= ``negative_threshold`` → 0, ratings in between dropped), ``rating`` (regression).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from wdrec.data.schema import ITEM_ID, LABEL, RATING, TIMESTAMP, USER_ID, InteractionData

SplitName = Literal["l1o", "random", "temporal", "predefined"]
Target = Literal["implicit", "binary", "rating"]


@dataclass
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [("train", self.train), ("val", self.val), ("test", self.test)]


def with_target(
    log: pd.DataFrame,
    target: Target,
    origin: str,
    positive_threshold: float = 4.0,
    negative_threshold: float = 2.0,
) -> pd.DataFrame:
    """Add the ``label`` the model learns (1.0 for implicit, 0/1 for binary, the rating itself)."""
    if target == "implicit":  # a 0/1 label column, if any, keeps its positives only
        positives = log[log[LABEL] > 0.5] if LABEL in log.columns else log
        return positives.assign(**{LABEL: np.float32(1.0)})
    if target == "rating":
        if RATING not in log.columns:
            raise ValueError(f"{origin}: target 'rating' needs a rating column; this data has {list(log.columns)}")
        return log.assign(**{LABEL: log[RATING].astype(np.float32)})
    if target != "binary":
        raise ValueError(f"target must be implicit, binary or rating, got {target!r}")
    if LABEL in log.columns:
        return log
    if RATING not in log.columns:
        raise ValueError(f"{origin}: target 'binary' needs a label or rating column; this data has {list(log.columns)}")
    if negative_threshold >= positive_threshold:
        raise ValueError(f"negative_threshold ({negative_threshold}) must be below positive_threshold ({positive_threshold})")
    rating = log[RATING]
    kept = log[(rating >= positive_threshold) | (rating <= negative_threshold)]
    return kept.assign(**{LABEL: (kept[RATING] >= positive_threshold).astype(np.float32)})


def resolve_split(requested: SplitName | None, carries_split: bool, source: str) -> SplitName:
    """The split to use: a source with its own train/val/test files implies ``predefined``,
    and any other split would silently move the user's test rows into training, so it is refused."""
    if carries_split:
        if requested in (None, "predefined"):
            return "predefined"
        raise ValueError(
            f"data.split is {requested!r}, but the {source} source carries its own train/val/test files, which a "
            f"{requested!r} split would discard: pass --data.split predefined to use them, "
            f"or give only `interactions` to let wdrec split"
        )
    if requested == "predefined":
        raise ValueError(f"data.split 'predefined' needs a source with train (and val/test) files; {source} has none")
    return requested or "l1o"


def make_splits(
    data: InteractionData,
    how: SplitName,
    target: Target,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    positive_threshold: float = 4.0,
    negative_threshold: float = 2.0,
) -> Splits:
    """Labelled train/val/test tables: targets are derived first, then rows are split."""

    def label(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
        return with_target(frame, target, origin, positive_threshold, negative_threshold)

    if how == "predefined":
        if not data.predefined or "train" not in data.predefined:
            raise ValueError("split 'predefined' needs a source with train (and val/test) files")
        empty = data.predefined["train"].iloc[:0]
        return Splits(
            *(label(data.predefined.get(n, empty), data.origins.get(n, n)) for n in ("train", "val", "test"))
        )
    log = label(data.interactions, data.origins.get("interactions", "interactions"))
    if how == "l1o":
        return leave_one_out(log)
    if how == "random":
        return random_split(log, fractions, seed)
    if how == "temporal":
        return temporal_split(log, fractions)
    raise ValueError(f"split must be l1o, random, temporal or predefined, got {how!r}")


def leave_one_out(log: pd.DataFrame) -> Splits:
    if TIMESTAMP not in log.columns:
        raise ValueError("split 'l1o' orders each user's interactions by time: the data needs a timestamp column")
    ordered = log.sort_values([USER_ID, TIMESTAMP, ITEM_ID], kind="stable")
    from_end = ordered.groupby(USER_ID, sort=False).cumcount(ascending=False).to_numpy()
    eligible = ordered.groupby(USER_ID, sort=False)[ITEM_ID].transform("size").to_numpy() >= 3
    test = eligible & (from_end == 0)
    val = eligible & (from_end == 1)
    return Splits(ordered[~(test | val)], ordered[val], ordered[test])


def random_split(log: pd.DataFrame, fractions: tuple[float, float, float], seed: int) -> Splits:
    _check_fractions(fractions)
    order = np.random.default_rng(seed).permutation(len(log))
    n_train, n_val = _cut_points(len(log), fractions)
    return Splits(*(log.iloc[np.sort(part)] for part in np.split(order, [n_train, n_train + n_val])))


def temporal_split(log: pd.DataFrame, fractions: tuple[float, float, float]) -> Splits:
    if TIMESTAMP not in log.columns:
        raise ValueError("split 'temporal' needs a timestamp column")
    _check_fractions(fractions)
    ordered = log.sort_values([TIMESTAMP, USER_ID, ITEM_ID], kind="stable")
    n_train, n_val = _cut_points(len(ordered), fractions)
    return Splits(ordered.iloc[:n_train], ordered.iloc[n_train : n_train + n_val], ordered.iloc[n_train + n_val :])


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split_fractions must be three non-negative numbers summing to 1, got {fractions}")


def _cut_points(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    n_train = int(round(n * fractions[0]))
    return n_train, int(round(n * fractions[1]))
