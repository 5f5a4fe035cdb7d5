"""The model being served: what it is (:class:`ModelInfo`) and the little the endpoints ask of it.

A :class:`ServedModel` is built whole by ``serving/loader.py`` and never changed afterwards;
the store swaps whole models. A request asks it who the user is (:meth:`ServedModel.user`:
known, a cold start from the features it sent, or a user with no known feature) and what
some items score for that user (:meth:`ServedModel.score`); the catalogue answers the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa
import torch
from torch import Tensor

from serving.catalogue import Catalogue, RequestError, as_text
from serving.precomputed import PrecomputedScorer
from serving.retrieval import CandidateGenerator
from wdrec.data.features import SideTensors
from wdrec.export.scorer import Scorer
from wdrec.export.similar import SimilarItems


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str | None
    run_id: str | None
    source: str  # the URI it was loaded from
    task: str
    num_users: int
    num_items: int
    metrics: dict[str, float | None]
    features: list[dict[str, Any]]
    crosses: list[list[str]]
    cold_start_features: list[str]  # user columns a cold-start request may send in user_features
    loaded_at: str
    fast_path: bool
    retrieval: str  # "full", or "two_stage(N)": N candidates ranked per request
    request_ms: float = 0.0  # one top-10 recommendation's compute, timed at load (median of 3)


@dataclass(frozen=True)
class User:
    """A request's user, encoded."""

    features: SideTensors  # one row
    row: int | None  # its row in the bundle's users table; None: a cold start
    seen: Tensor  # catalogue rows it interacted with (a cold start: the history it sent)


@dataclass(frozen=True, eq=False)
class ServedModel:
    """One loaded bundle as the endpoints use it.

    ``reference`` scores through the network's ``forward`` (``Scorer.score_user``);
    ``precomputed``, when the loader verified it, gives the same scores with the items' half
    of the network computed once (serving/precomputed.py).
    """

    info: ModelInfo
    catalogue: Catalogue
    reference: Scorer = field(repr=False)
    blank_user: SideTensors = field(repr=False)  # a user with no known feature
    user_rows: dict[str, int] = field(repr=False)  # known user id -> row of the bundle's users table
    precomputed: PrecomputedScorer | None = field(default=None, repr=False)
    retriever: CandidateGenerator | None = field(default=None, repr=False)  # two-stage: candidates, then ranking

    @cached_property
    def similar(self) -> SimilarItems:
        """Similar items (wdrec/export/similar.py), built on first use: most requests never ask."""
        return SimilarItems(self.reference)

    def user(self, user_id: str, features: Mapping[str, Any] | None = None) -> User:
        """A known user (``features`` ignored), else a cold start from ``features``, else a user with
        no known feature. Features the model does not read are a :class:`RequestError`."""
        row = self.user_rows.get(user_id)
        if row is not None:
            return User(self.reference.users.take(torch.tensor([row])), row, self.reference.seen_rows(row))
        if not features:
            return User(self.blank_user, None, torch.zeros(0, dtype=torch.long))
        return User(self._cold_start(features), None, self._history_rows(features))

    def score(self, user: User, rows: Tensor | None = None, skip: Tensor | None = None) -> Tensor:
        """The user's scores for the catalogue (``rows=None``) or the given catalogue rows.

        ``skip``: a catalogue mask of rows whose scores the caller discards; they may come back inexact.
        """
        if self.precomputed is not None:
            return self.precomputed.score(user.features, rows, user.row, skip)
        return self.reference.score_user(user.features, rows)

    def _cold_start(self, features: Mapping[str, Any]) -> SideTensors:
        given = set(self.reference.spec.given_columns("user"))
        fields = {f.column: f for f in self.reference.spec.side_fields("user") if f.column in given}
        unknown = sorted(set(features) - set(fields))
        if unknown:
            raise RequestError("user_features", f"unknown feature(s) {unknown}; this model reads {sorted(fields)}")
        raw: dict[str, Any] = {}
        for column, value in features.items():
            if fields[column].is_bag:
                raw[column] = [] if value is None else [as_text(v) for v in (value if isinstance(value, list) else [value])]
            elif isinstance(value, list):
                raise RequestError(f"user_features.{column}", "takes one value, not a list")
            else:
                raw[column] = value
        try:
            return self.reference.encode_user_features(raw)
        except (ValueError, TypeError, pa.ArrowException) as error:
            column = getattr(error, "column", None)
            name = f"user_features.{column}" if column else "user_features"
            message = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise RequestError(name, message) from None

    def _history_rows(self, features: Mapping[str, Any]) -> Tensor:
        """Catalogue rows of a cold-start user's given history (they count as seen)."""
        rows: set[int] = set()
        for fld in self.reference.spec.history_fields():
            value = features.get(fld.column)
            if value:
                ids = [as_text(v) for v in (value if isinstance(value, list) else [value])]
                rows.update(self.catalogue.row_of[i] for i in ids if i in self.catalogue.row_of)
        return torch.tensor(sorted(rows), dtype=torch.long)
