"""The model being served, and hot reload without dropping a request.

A :class:`LoadedModel` is immutable once built: the bundle, its :class:`Scorer`, the
catalogue arrays and the precomputed :class:`CatalogueScorer`. :class:`ModelStore` holds
the current one. A reload builds the new model *beside* the old one, probes it (a known
user against a few items: finite scores, probabilities within [0, 1]), and only then
swaps the reference, which is one atomic assignment. Each request takes
``store.current`` once, at its start, and keeps that object to the end, so requests in
flight finish on the model they began with. A failed load leaves the old model in
place and reports why. A lock keeps two reloads from interleaving.

Loading reads files, may download from MLflow and runs the network: callers run it in a
worker thread (``anyio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

import torch
from torch import Tensor

from serving.config import tracking_uri
from serving.recommender import Catalogue, recommend
from serving.retrieval import CandidateGenerator
from serving.scoring import CatalogueScorer, Unsupported
from wdrec.data.features import SideTensors
from wdrec.export.bundle import BundleError, read_bundle
from wdrec.export.registry import resolve_bundle
from wdrec.export.scorer import Scorer

log = logging.getLogger("wdrec.serving")
PROBE_ITEMS = 8
FAST_PATH_TOLERANCE = 1e-5  # the served score must equal the offline score to this


class ModelLoadError(RuntimeError):
    """A model that cannot be served; the message names the URI or file and the reason."""


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


@dataclass(eq=False)
class LoadedModel:
    info: ModelInfo
    scorer: Scorer
    catalogue: Catalogue
    blank_user: SideTensors  # a user with no known feature
    fast: CatalogueScorer | None = field(default=None, repr=False)
    retriever: CandidateGenerator | None = field(default=None, repr=False)  # two-stage: candidates, then ranking
    user_row: dict[str, int] = field(default_factory=dict, repr=False)  # user id -> row of scorer.users

    def score(
        self, user: SideTensors, rows: Tensor | None = None, user_row: int | None = None, skip: Tensor | None = None
    ) -> Tensor:
        """One user's scores for the catalogue (``rows=None``) or the given catalogue rows.

        ``user_row``: the known user's row; ``skip``: catalogue rows whose scores the caller
        discards (see :meth:`CatalogueScorer.score`).
        """
        if self.fast is not None:
            return self.fast.score(user, rows, user_row, skip)
        return self.scorer.score_user(user, rows)


def load_model(uri: str, fast_path: bool = True, candidates: int | None = None) -> LoadedModel:
    """Resolve, read, verify and probe a bundle; raises :class:`ModelLoadError` with the reason.

    ``candidates``: rank only this many items from a :class:`CandidateGenerator` per request
    (two-stage retrieval) instead of the whole catalogue.
    """
    try:
        directory, registry = _resolve(uri)
        bundle = read_bundle(directory)
    except BundleError as error:
        raise ModelLoadError(str(error)) from None
    try:
        scorer = Scorer(bundle)
        catalogue = Catalogue(bundle.items)
        blank = scorer.users.take(torch.tensor([scorer.unknown_row]))
        fast = _fast_scorer(scorer, blank) if fast_path else None
        _probe(scorer, fast, blank)
        retriever = None
        if candidates:
            prior = fast.score(blank) if fast is not None else scorer.score_user(blank)
            retriever = CandidateGenerator(scorer, prior, candidates)
    except ModelLoadError:
        raise
    except Exception as error:  # anything else a bad bundle can throw: refuse it, say why
        raise ModelLoadError(f"{directory}: cannot serve this bundle: {type(error).__name__}: {error}") from None
    metadata = bundle.metadata
    spec = bundle.spec
    info = ModelInfo(
        name=registry.get("name") or metadata.get("registered_model") or Path(directory).name,
        version=registry.get("version") or _text(metadata.get("version")),
        run_id=registry.get("run_id") or _text(metadata.get("run_id")),
        source=uri,
        task=bundle.task,
        num_users=len(bundle.users),
        num_items=len(bundle.items),
        metrics={k: _finite(v) for k, v in (metadata.get("metrics") or {}).items()},
        features=[{"name": f.name, "side": f.side, "kind": f.kind, "column": f.column} for f in spec.fields],
        crosses=[list(c.fields) for c in spec.crosses],
        cold_start_features=[f.column for f in spec.side_fields("user") if f.column != "user_id"],
        loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
        fast_path=fast is not None,
        retrieval=f"two_stage({candidates})" if retriever is not None else "full",
    )
    user_row = {user: row for row, user in enumerate(scorer.user_index.tolist())}
    model = LoadedModel(info, scorer, catalogue, blank, fast, retriever, user_row)
    try:
        request_ms = _time_request(model)
    except Exception as error:  # the probe passed, so this is unexpected; still refuse the bundle, saying why
        raise ModelLoadError(f"{directory}: a probe recommendation failed: {type(error).__name__}: {error}") from None
    return replace(model, info=replace(info, request_ms=request_ms))


def _time_request(model: LoadedModel, repeats: int = 3) -> float:
    """Milliseconds one recommendation takes (a known user, else a cold start): the median of ``repeats``."""
    user = next(iter(model.user_row), "")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        recommend(model, user, 10)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


def _resolve(uri: str) -> tuple[Path, dict[str, str]]:
    if not uri.startswith("models:/"):
        return resolve_bundle(uri)
    from mlflow import MlflowClient  # imported here: a bundle path never needs MLflow

    try:
        return resolve_bundle(uri, MlflowClient(tracking_uri=tracking_uri()))
    except Exception as error:  # MlflowException and friends: unknown name, alias or version
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{uri}: not found in the MLflow registry at {tracking_uri()}: {reason}") from None


def _fast_scorer(scorer: Scorer, blank: SideTensors) -> CatalogueScorer | None:
    """The precomputed scorer when it reproduces ``Scorer.score_user``; else None (the slow, exact path)."""
    try:
        fast = CatalogueScorer(scorer)
    except Unsupported as why:
        log.info("scoring with Scorer.score_user: the fast path does not cover %s", why)
        return None
    users: list[tuple[SideTensors, int | None]] = [(blank, None)]
    if len(scorer.user_index):
        longest = int(torch.tensor([len(h) for h in scorer.bundle.users["seen"].head(64)]).argmax())
        users.append((scorer.users.take(torch.tensor([longest])), longest))
    difference = fast.verify(scorer, users)
    if not difference <= FAST_PATH_TOLERANCE:
        log.warning("fast path differs from Scorer.score_user by %.3g; scoring with Scorer.score_user", difference)
        return None
    return fast


def _probe(scorer: Scorer, fast: CatalogueScorer | None, blank: SideTensors) -> None:
    """Score one known user (or the blank user) against a few items: finite, and in [0, 1] for binary."""
    if not len(scorer.item_ids):
        raise ModelLoadError(f"{scorer.bundle.metadata.get('run_id', 'bundle')}: the catalogue is empty")
    user_row = 0 if len(scorer.user_index) else None
    user = blank if user_row is None else scorer.users.take(torch.tensor([user_row]))
    rows = torch.arange(min(PROBE_ITEMS, len(scorer.item_ids)))
    scores = (fast.score(user, rows, user_row) if fast is not None else scorer.score_user(user, rows)).float()
    if not bool(torch.isfinite(scores).all()):
        raise ModelLoadError("probe request failed: the model returns non-finite scores")
    if scorer.task == "binary" and not bool(((scores >= 0) & (scores <= 1)).all()):
        raise ModelLoadError("probe request failed: a binary model returned scores outside [0, 1]")


def is_alias(uri: str | None) -> TypeGuard[str]:
    """Whether ``uri`` is a ``models:/name@alias`` URI, whose version can move."""
    return uri is not None and uri.startswith("models:/") and "@" in uri


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class ModelStore:
    """The current :class:`LoadedModel`, swapped atomically by :meth:`load`.

    Args:
        uri: what to load at start and on a reload that names no model.
        fast_path: allow the precomputed :class:`CatalogueScorer` (verified at each load).
        candidates: two-stage retrieval with this many candidates; None scores the whole catalogue.
    """

    def __init__(self, uri: str | None, fast_path: bool = True, candidates: int | None = None) -> None:
        self.uri = uri
        self.fast_path, self.candidates = fast_path, candidates
        self.current: LoadedModel | None = None
        self.reloads = 0  # successful loads after the first
        self.failures = 0  # failed loads, the first included
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def load(self, uri: str | None = None, source: str | None = None) -> tuple[LoadedModel | None, LoadedModel]:
        """Load ``uri`` (default: the store's), probe it and make it current; returns (old, new).

        ``source``: what ``ModelInfo.source`` reports instead of ``uri`` (a worker loading the
        pinned ``models:/name/N`` of a published ``models:/name@alias`` reports the alias, as
        the worker that published it does). Blocking: call it from a worker thread. On failure
        the current model stays.
        """
        uri = uri or self.uri
        if not uri:
            raise ModelLoadError("no model to load: give a bundle path or a models:/ URI")
        with self._lock:
            old = self.current
            try:
                new = load_model(uri, self.fast_path, self.candidates)
            except ModelLoadError as error:
                self.failures += 1
                self.last_error = str(error)
                raise
            if source is not None:
                new = replace(new, info=replace(new.info, source=source))
            self.current = new  # the swap: requests that already hold `old` keep it
            if old is not None:
                self.reloads += 1
            self.last_error = None
        log.info(
            "model loaded",
            extra={"event": "model_loaded", "model": new.info.name, "model_version": new.info.version,
                   "source": uri, "previous_version": None if old is None else old.info.version,
                   "fast_path": new.info.fast_path, "retrieval": new.info.retrieval},
        )  # fmt: skip
        return old, new

    def registry_version(self) -> str | None:
        """The version a ``models:/name@alias`` URI points at now (for polling); None otherwise."""
        if not is_alias(self.uri):
            return None
        from mlflow import MlflowClient

        name, _, alias = self.uri.removeprefix("models:/").partition("@")
        return str(MlflowClient(tracking_uri=tracking_uri()).get_model_version_by_alias(name, alias).version)
