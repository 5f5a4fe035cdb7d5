"""Labels and train/validation/test splits, as DESIGN.md's evaluation protocols define them.

- ``l1o``: per user, ordered by time, the last interaction is test and the one before is
  validation; users with fewer than three interactions stay in train.
- ``random``: a seeded random 80/10/10 split of rows (with the ``binary`` target this
  is the PW protocol).
- ``temporal``: one global time cut: the oldest 80% train, then 10% / 10%.
- ``predefined``: the user's own train/val/test files.

Interactions in the same second need a rule to order them (``tie_break``), and in MovieLens-100k
415 of 943 users have ties in their last second. ``random`` (seeded, the default) orders them
at random, so no rule of the log or of the ids decides which item is held out; ``log_order``
keeps the order of the rows in the log; ``item_id`` orders by id, numerically when every id is
a number. (Before this rule existed, ties went by id as text: "97" after "735".)

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
TieBreak = Literal["random", "log_order", "item_id"]
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
    tie_break: TieBreak = "random",
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
        return leave_one_out(log, tie_break, seed)
    if how == "random":
        return random_split(log, fractions, seed)
    if how == "temporal":
        return temporal_split(log, fractions, tie_break, seed)
    raise ValueError(f"split must be l1o, random, temporal or predefined, got {how!r}")


def in_time_order(log: pd.DataFrame, keys: list[str], tie_break: TieBreak, seed: int) -> pd.DataFrame:
    """``log`` sorted by ``keys``, rows with equal keys ordered by the tie rule (see the module's docstring)."""
    if tie_break == "log_order":
        return log.sort_values(keys, kind="stable")
    if tie_break == "random":
        tie = np.random.default_rng(seed).random(len(log))
    elif tie_break == "item_id":
        numeric = pd.to_numeric(log[ITEM_ID], errors="coerce")
        tie = (numeric if numeric.notna().all() else log[ITEM_ID].astype(str)).to_numpy()
    else:
        raise ValueError(f"tie_break must be random, log_order or item_id, got {tie_break!r}")
    return log.assign(_tie=tie).sort_values([*keys, "_tie"], kind="stable").drop(columns="_tie")


def leave_one_out(log: pd.DataFrame, tie_break: TieBreak = "random", seed: int = 42) -> Splits:
    if TIMESTAMP not in log.columns:
        raise ValueError("split 'l1o' orders each user's interactions by time: the data needs a timestamp column")
    ordered = in_time_order(log, [USER_ID, TIMESTAMP], tie_break, seed)
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


def temporal_split(
    log: pd.DataFrame, fractions: tuple[float, float, float], tie_break: TieBreak = "random", seed: int = 42
) -> Splits:
    if TIMESTAMP not in log.columns:
        raise ValueError("split 'temporal' needs a timestamp column")
    _check_fractions(fractions)
    ordered = in_time_order(log, [TIMESTAMP], tie_break, seed)
    n_train, n_val = _cut_points(len(ordered), fractions)
    return Splits(ordered.iloc[:n_train], ordered.iloc[n_train : n_train + n_val], ordered.iloc[n_train + n_val :])


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split_fractions must be three non-negative numbers summing to 1, got {fractions}")


def _cut_points(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    n_train = int(round(n * fractions[0]))
    return n_train, int(round(n * fractions[1]))
