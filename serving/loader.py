"""Loading a model to serve: resolve, read, build, verify, probe and time it.

:func:`load_model` builds a :class:`~serving.served_model.ServedModel` beside whatever is
being served, or raises :class:`ModelLoadError` saying why; swapping it in is the store's
one job (serving/model_store.py). The precomputed scorer is served only once it agrees with
the network's ``forward`` (``Scorer.score_user``) on real users; the probe scores a known
user against a few items (finite scores, probabilities within [0, 1]).

Loading reads files, may download from MLflow and runs the network: callers run it in a
worker thread (``anyio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch

from serving.catalogue import Catalogue
from serving.precomputed import PrecomputedScorer
from serving.recommender import recommend
from serving.retrieval import CandidateGenerator
from serving.served_model import ModelInfo, ServedModel, User
from wdrec.data.features import SideTensors
from wdrec.export.bundle import BundleError, read_bundle
from wdrec.export.registry import resolve_bundle
from wdrec.export.scorer import Scorer
from wdrec.tracking_store import TrackingUnavailable, check_tracking_uri, resolve_tracking_uri

log = logging.getLogger("wdrec.serving")
FastPath = bool | Literal["require"]  # require: refuse a model whose precomputed scorer differs from forward
PROBE_ITEMS = 8
FAST_PATH_TOLERANCE = 1e-5  # the served score must equal the offline score to this


class ModelLoadError(RuntimeError):
    """A model that cannot be served; the message names the URI or file and the reason."""


@dataclass(frozen=True)
class Difference:
    """The largest difference between the precomputed scorer and ``forward``, and where it is."""

    value: float
    user: str
    item: str

    def __str__(self) -> str:
        return f"{self.value:.3g} (user {self.user}, item {self.item!r})"


def load_model(
    uri: str, fast_path: FastPath = True, candidates: int | None = None, source: str | None = None, tracking_uri: str | None = None
) -> ServedModel:
    """Resolve, read, build, verify, probe and time a bundle; raises :class:`ModelLoadError` with the reason.

    ``candidates``: rank only this many items from a :class:`CandidateGenerator` per request
    (two-stage retrieval) instead of the whole catalogue. ``source``: what ``ModelInfo.source``
    reports instead of ``uri`` (a worker loading the pinned version of a published alias).
    ``tracking_uri``: the registry a ``models:/`` URI is looked up in (default: as ``wdrec fit`` tracks).
    """
    try:
        directory, registry = _resolve(uri, resolve_tracking_uri(tracking_uri))
        bundle = read_bundle(directory)
    except BundleError as error:
        raise ModelLoadError(str(error)) from None
    if bundle.items.empty:
        raise ModelLoadError(f"{directory}: the catalogue is empty")
    metadata, spec = bundle.metadata, bundle.spec
    try:
        reference = Scorer(bundle)
        blank = reference.users.take(torch.tensor([reference.unknown_row]))
        precomputed = _precomputed(reference, blank, fast_path, directory) if fast_path else None
        info = ModelInfo(
            name=registry.get("name") or metadata.get("registered_model") or Path(directory).name,
            version=registry.get("version") or _text(metadata.get("version")),
            run_id=registry.get("run_id") or _text(metadata.get("run_id")),
            source=source or uri,
            task=bundle.task,
            num_users=len(bundle.users),
            num_items=len(bundle.items),
            metrics={k: _finite(v) for k, v in (metadata.get("metrics") or {}).items()},
            features=[{"name": f.name, "side": f.side, "kind": f.kind, "column": f.column} for f in spec.fields],
            crosses=[list(c.fields) for c in spec.crosses],
            cold_start_features=spec.given_columns("user"),
            loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
            fast_path=precomputed is not None,
            retrieval=f"two_stage({candidates})" if candidates else "full",
        )
        user_rows = {user: row for row, user in enumerate(reference.user_index.tolist())}
        catalogue = Catalogue(bundle.items.drop(columns=spec.statistic_columns("item")))  # what the items are, not what training counted
        model = ServedModel(info, catalogue, reference, blank, user_rows, precomputed)
        _probe(model)
        if candidates:  # the prior: what the model prefers for a user with no known feature
            prior = model.score(User(blank, None, torch.zeros(0, dtype=torch.long)))
            model = replace(model, retriever=CandidateGenerator(reference, prior, candidates))
    except ModelLoadError:
        raise
    except Exception as error:  # anything else a bad bundle can throw: refuse it, say why
        raise ModelLoadError(f"{directory}: cannot serve this bundle: {type(error).__name__}: {error}") from None
    try:
        request_ms = _time_request(model)
    except Exception as error:  # the probe passed, so this is unexpected; still refuse the bundle, saying why
        raise ModelLoadError(f"{directory}: a probe recommendation failed: {type(error).__name__}: {error}") from None
    return replace(model, info=replace(info, request_ms=request_ms))


def _resolve(uri: str, tracking_uri: str) -> tuple[Path, dict[str, str]]:
    if not uri.startswith("models:/"):
        return resolve_bundle(uri)
    from mlflow import MlflowClient  # imported here: a bundle path never needs MLflow

    try:
        check_tracking_uri(tracking_uri, existing=True)  # in seconds, not after MLflow's retries
    except TrackingUnavailable as error:
        raise ModelLoadError(f"{uri}: {error}") from None
    try:
        return resolve_bundle(uri, MlflowClient(tracking_uri=tracking_uri))
    except Exception as error:  # MlflowException and friends: unknown name, alias or version
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{uri}: not found in the MLflow registry at {tracking_uri}: {reason}") from None


def _precomputed(reference: Scorer, blank: SideTensors, fast_path: FastPath, directory: Path) -> PrecomputedScorer | None:
    """The precomputed scorer when it reproduces ``Scorer.score_user``; else None (the exact path),
    or, with ``fast_path="require"``, a :class:`ModelLoadError` that names the difference."""
    precomputed = PrecomputedScorer(reference)
    users: list[tuple[str, SideTensors, int | None]] = [("with no known feature", blank, None)]
    if len(reference.user_index):  # a long history: its items are scored by forward, the rest must agree
        row = max(range(min(64, len(reference.user_index))), key=lambda r: len(reference.seen_rows(r)))
        users.append((repr(reference.user_index[row]), reference.users.take(torch.tensor([row])), row))
    difference = verify(reference, precomputed, users)
    if difference.value <= FAST_PATH_TOLERANCE:
        return precomputed
    message = f"{directory}: the precomputed scorer differs from the network's forward by {difference}, more than {FAST_PATH_TOLERANCE:g}"
    if fast_path == "require":
        raise ModelLoadError(f"{message}; WDREC_FAST_PATH=require refuses the model")
    log.warning("%s; scoring with Scorer.score_user", message)
    return None


def verify(reference: Scorer, precomputed: PrecomputedScorer, users: list[tuple[str, SideTensors, int | None]]) -> Difference:
    """The largest difference from ``Scorer.score_user`` for ``(name, user, user_row)``, over the
    whole catalogue and over a subset of its rows (NaN counts as the largest)."""
    worst = Difference(0.0, "", "")
    for name, user, user_row in users:
        exact = reference.score_user(user)
        for rows in (None, torch.arange(0, len(exact), max(1, len(exact) // 7))):
            got = precomputed.score(user, rows, user_row)
            gap = (got - (exact if rows is None else exact[rows])).abs()
            at = int(gap.nan_to_num(math.inf).argmax())
            value = float(gap[at])
            if not value <= worst.value:
                row = at if rows is None else int(rows[at])
                worst = Difference(value, name, str(reference.item_ids[row]))
    return worst


def _probe(model: ServedModel) -> None:
    """Score one known user (or one with no known feature) against a few items: finite, and in
    [0, 1] for binary."""
    user = model.user(next(iter(model.user_rows), ""))
    scores = model.score(user, torch.arange(min(PROBE_ITEMS, model.catalogue.size))).float()
    if not bool(torch.isfinite(scores).all()):
        raise ModelLoadError("probe request failed: the model returns non-finite scores")
    if model.info.task == "binary" and not bool(((scores >= 0) & (scores <= 1)).all()):
        raise ModelLoadError("probe request failed: a binary model returned scores outside [0, 1]")


def _time_request(model: ServedModel, repeats: int = 3) -> float:
    """Milliseconds one recommendation takes (a known user, else a cold start): the median of ``repeats``."""
    user = next(iter(model.user_rows), "")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        recommend(model, user, 10)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
