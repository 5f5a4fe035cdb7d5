"""Batch recommendations and scores from a model bundle: ``wdrec recommend`` and ``wdrec predict``.

    wdrec recommend --model models:/wdrec@champion --users all --k 10 --output recs.parquet
    wdrec predict --model models:/wdrec@champion --input pairs.csv --output scored.parquet

``recommend`` gives each user what ``POST /v1/recommend`` gives (serving/recommender.py):
the whole catalogue scored, the user's seen items left out (``--include-seen`` keeps
them), the top K by score with equal scores in catalogue order. It scores a block of users
at once (``PrecomputedScorer.score_users``: the items' half of the network computed once per
model, the known users' half once per load, the deep top run ``deep_block`` (user, item)
pairs at a time) and takes every row's top K together (:func:`top_k_rows`). A block holds
``--batch-users`` users, by default as many as keep its (users × items) scores near
``BLOCK_SCORES``, so memory stays bounded on any catalogue.

Users: ``all`` (every user the model knows, in its users table's order) or a CSV or Parquet
file with a ``user_id`` column (in file order; a repeated id once). An id the model does not
know is a cold start: the file's columns named like the model's user features (``age``,
``occupation``, ``history``, ...) are its features, as ``user_features`` in an HTTP request
(a multi-valued feature given as text is split on ``|``; a history's items count as seen);
without such columns, or with them empty, it is a user with no known feature. Other columns
are ignored.

Output, chosen by the extension (``.parquet`` or ``.csv``): ``user_id``, ``item_id`` (the
original ids, as text), ``rank`` (1..K), ``score``; K rows per user (fewer when fewer items
remain); with ``--explain``, ``explanation`` too: the item's logit split into its largest
named terms plus the rest, as ``"explain": true`` gives over HTTP (``wdrec.export.explain``; a
struct ``{logit, terms: [{name, value, kind}], rest}`` in Parquet, its JSON text in CSV). It is
written to a temporary file beside the output and renamed into place at the end. ``predict`` writes ``user_id``, ``item_id`` and ``score`` for each (user, item) pair of
its input, in order (``Scorer.score_pairs``: the network's forward; unknown users score as
users with no known feature; an unknown item is an error).

Bad input (an unknown model or unreachable registry, a missing column, an unreadable input, an
unwritable output or an unknown extension) ends the command with one line ``wdrec: ...`` and
exit status 2, before the model is loaded where it can be, and leaves no output file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import torch
from torch import Tensor
from tqdm import tqdm

from serving.catalogue import as_text
from serving.loader import ModelLoadError, load_model
from serving.recommender import top_k
from serving.served_model import ServedModel
from wdrec.data.features import SideTensors
from wdrec.data.io import atomic_write
from wdrec.data.schema import ITEM_ID, USER_ID, DataError, split_strings
from wdrec.export.explain import Explanation, explain
from wdrec.export.scorer import UnknownItemsError

BLOCK_SCORES = 4_000_000  # (users × items) scores per block by default: ~16 MB per copy, on any catalogue
MAX_BLOCK_USERS = 1024
PAIRS_PER_CHUNK = 1 << 20  # wdrec predict: pairs scored per step
ROWS_PER_GROUP = 1 << 17  # output rows buffered per Parquet row group / CSV write
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
RECOMMENDATIONS = pa.schema([(USER_ID, pa.string()), (ITEM_ID, pa.string()), ("rank", pa.int32()), ("score", pa.float32())])
TERM = pa.struct([("name", pa.string()), ("value", pa.float64()), ("kind", pa.string())])
EXPLANATION = pa.struct([("logit", pa.float64()), ("terms", pa.list_(TERM)), ("rest", pa.float64())])  # JSON text in CSV
SCORES = pa.schema([(USER_ID, pa.string()), (ITEM_ID, pa.string()), ("score", pa.float32())])


class BatchError(ValueError):
    """Bad input for ``wdrec recommend`` or ``wdrec predict``; reported in one line."""


# ------------------------------------------------------------------------------ users
@dataclass(frozen=True)
class Users:
    """The users to recommend for, in order, with the cold-start features the input gave."""

    ids: list[str]
    features: pd.DataFrame | None = None  # one row per id: columns named like the model's user features
    origin: str = "users"  # where they come from, for messages


def read_table(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """A CSV (every column as text) or Parquet file that must hold ``columns`` (as text)."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise BatchError(f"{path}: unknown input format {path.suffix!r}; use {', '.join(FORMATS)}")
    try:
        if kind == "csv":
            frame = pd.read_csv(path, dtype=str)
        else:
            frame = pq.read_table(path).to_pandas(types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_list(t) else None)
    except (OSError, ValueError, pa.ArrowException) as error:
        raise BatchError(f"{path}: cannot read it: {error}") from None
    for column in columns:
        if column not in frame.columns:
            raise BatchError(f"{path}: no column '{column}' (it has {', '.join(map(str, frame.columns)) or 'none'})")
        if frame[column].isna().any():
            raise BatchError(f"{path}: column '{column}': empty in row {int(frame[column].isna().to_numpy().argmax()) + 1}")
        frame[column] = frame[column].map(as_text)
    return frame


def users_of(model: ServedModel, frame: pd.DataFrame | None, origin: str = "users") -> Users:
    """The model's known users (``frame`` None), or the ``user_id`` column of a table from
    :func:`read_table` (read from ``origin``), each id once, with its columns named like the
    model's user features."""
    if frame is None:
        return Users(list(model.user_rows))
    frame = frame.drop_duplicates(USER_ID)
    spec = model.reference.spec
    columns = [c for c in spec.given_columns("user") if c in frame]
    if not columns:
        return Users(frame[USER_ID].tolist(), None, origin)
    features = frame[columns].reset_index(drop=True)
    for column in {f.column for f in spec.bag_fields("user") if f.column in columns}:
        if not isinstance(features[column].dtype, pd.ArrowDtype):  # text (CSV) is split on "|"; Parquet lists stay
            features[column] = split_strings(features[column], "|")
    return Users(frame[USER_ID].tolist(), features, origin)


# ---------------------------------------------------------------------------- ranking
@dataclass
class Pick:
    """One user's top K: catalogue rows and scores, best first, and their explanations when asked."""

    rows: Tensor
    scores: Tensor
    explanations: list[Explanation] | None = None


def top_k_rows(scores: Tensor, k: int) -> list[tuple[Tensor, Tensor]]:
    """``serving.recommender.top_k`` of each row of ``scores`` (B, N): (positions, scores) per row,
    best first, equal scores in position order, only finite scores.

    Rows whose K best scores are K distinct finite contenders (no tie across the K-th place:
    nearly all) are ranked together; any other row by ``top_k`` itself.
    """
    k = min(k, scores.shape[1])
    if k == 0:
        return [(torch.zeros(0, dtype=torch.long), scores.new_zeros(0)) for _ in range(len(scores))]
    threshold = torch.topk(scores, k, dim=1, sorted=False).values.min(1, keepdim=True).values  # (B, 1)
    contenders = scores >= threshold  # (B, N)
    simple = (contenders.sum(1) == k) & (threshold.squeeze(1) > -math.inf)
    result: list[tuple[Tensor, Tensor] | None] = [None] * len(scores)
    if bool(simple.any()):
        at = torch.nonzero(simple).squeeze(1)
        positions = torch.nonzero(contenders[at])[:, 1].view(-1, k)  # (b, k), ascending per row
        values = scores[at].gather(1, positions)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices
        for i, row, value in zip(at.tolist(), positions.gather(1, order), values.gather(1, order), strict=True):
            result[i] = (row, value)
    for i in torch.nonzero(~simple).squeeze(1).tolist():
        row = top_k(scores[i], k)
        result[i] = (row, scores[i, row])
    return result  # type: ignore[return-value]


class BatchRecommender:
    """The top K items for many users of a :class:`ServedModel`, as ``serving.recommender.recommend``
    gives each of them, a block of users at a time.

    Args:
        model: the loaded model (serving/loader.py), scored by its precomputed scorer when it has one.
        k: items per user.
        exclude_seen: leave out the items each user interacted with (and a cold start's history).
        batch_users: users per block; default: as many as keep (users × items) near ``BLOCK_SCORES``.
        explain_terms: add each item's explanation with this many terms (``wdrec.export.explain``, the
            deep part split as the HTTP API splits it); None: no explanations.
    """

    def __init__(
        self, model: ServedModel, k: int, exclude_seen: bool = True, batch_users: int | None = None, explain_terms: int | None = None
    ) -> None:
        self.model, self.k, self.exclude_seen, self.explain_terms = model, k, exclude_seen, explain_terms
        self.spec = model.reference.spec
        self.batch_users = batch_users or max(1, min(MAX_BLOCK_USERS, BLOCK_SCORES // max(1, model.catalogue.size)))
        self.item_ids = np.asarray(model.catalogue.ids, dtype=object)
        self.schema = RECOMMENDATIONS if explain_terms is None else RECOMMENDATIONS.append(pa.field("explanation", EXPLANATION))
        self._blank: Pick | None = None  # a user with no known feature: the same for all

    def batches(self, users: Users, progress: Callable[[int], object] = lambda n: None) -> Iterator[pa.RecordBatch]:
        """The recommendations of ``users`` in order, one record batch per block (``self.schema``);
        ``progress(n)`` after each block of ``n`` users."""
        for start in range(0, len(users.ids), self.batch_users):
            ids = users.ids[start : start + self.batch_users]
            features = None if users.features is None else users.features.iloc[start : start + len(ids)]
            yield self.block(ids, features, users.origin)
            progress(len(ids))

    def block(self, ids: list[str], features: pd.DataFrame | None = None, origin: str = "users") -> pa.RecordBatch:
        """One block's recommendations: ``ids`` and, for those the model does not know, ``features``
        (one row per id, read from ``origin``)."""
        model, found = self.model, [self.model.user_rows.get(u) for u in ids]
        picks: list[Pick | None] = [None] * len(ids)
        known = [i for i, row in enumerate(found) if row is not None]
        if known:
            rows = torch.tensor([found[i] for i in known])
            seen = [model.reference.seen_rows(row) for row in rows.tolist()]
            self._place(picks, known, self._ranked(model.reference.users.take(rows), rows, seen))
        blank = [i for i, row in enumerate(found) if row is None]
        if blank and features is not None:  # cold starts: with features, else with no known feature
            given = _given(features.iloc[blank])
            described, blank = [i for i, g in zip(blank, given, strict=True) if g], [i for i, g in zip(blank, given, strict=True) if not g]
            if described:
                users, seen = self._encode(features.iloc[described], origin)
                self._place(picks, described, self._ranked(users, None, seen))
        if blank:
            if self._blank is None:
                self._blank = self._ranked(model.blank_user, None, [torch.zeros(0, dtype=torch.long)])[0]
            self._place(picks, blank, [self._blank] * len(blank))
        return self._records(ids, picks)

    def _ranked(self, users: SideTensors, rows: Tensor | None, seen: list[Tensor]) -> list[Pick]:
        """The top K of a block of users (``rows``: their rows in the users table, when known)."""
        skip = None
        if self.exclude_seen and any(len(s) for s in seen):
            skip = torch.zeros((len(users), self.model.catalogue.size), dtype=torch.bool)
            for i, items in enumerate(seen):
                skip[i, items] = True
        precomputed = self.model.precomputed
        if precomputed is not None:
            scores = precomputed.score_users(users, rows, None, skip)
        else:  # the loader found the precomputed scorer inexact: the network's forward, one user at a time
            scores = torch.stack([self.model.reference.score_user(users.take(torch.tensor([i]))) for i in range(len(users))])
        if skip is not None:
            scores = scores.masked_fill(skip, -math.inf)
        picks = [Pick(positions, values) for positions, values in top_k_rows(scores, self.k)]
        if self.explain_terms is not None:
            for i, pick in enumerate(picks):
                user = users.take(torch.tensor([i]))
                pick.explanations = explain(self.model.reference, user, pick.rows, self.explain_terms, split_deep=True)
        return picks

    def _encode(self, features: pd.DataFrame, origin: str) -> tuple[SideTensors, list[Tensor]]:
        """Cold starts from a file's feature columns, and the catalogue rows of their histories (seen)."""
        try:
            users = self.spec.encode("user", features.assign(**{USER_ID: ""}))
        except DataError as error:
            raise BatchError(f"{origin}: column '{error.column}': {error.problem}") from None
        row_of, histories = self.model.catalogue.row_of, [f.column for f in self.spec.history_fields() if f.column in features]
        seen = []
        for values in zip(*(features[c] for c in histories), strict=True) if histories else [()] * len(features):
            ids = {as_text(v) for value in values if _listed(value) for v in value}
            seen.append(torch.tensor(sorted(row_of[i] for i in ids if i in row_of), dtype=torch.long))
        return users, seen

    @staticmethod
    def _place(picks: list[Pick | None], positions: list[int], ranked: list[Pick]) -> None:
        for position, pick in zip(positions, ranked, strict=True):
            picks[position] = pick

    def _records(self, ids: list[str], picks: list[Pick]) -> pa.RecordBatch:
        counts = [len(pick.rows) for pick in picks]
        rows = torch.cat([pick.rows for pick in picks]).numpy() if picks else np.zeros(0, dtype=np.int64)
        scores = torch.cat([pick.scores for pick in picks]).float().numpy() if picks else np.zeros(0, dtype=np.float32)
        ranks = np.concatenate([np.arange(1, c + 1, dtype=np.int32) for c in counts]) if picks else np.zeros(0, dtype=np.int32)
        columns = [pa.array(np.repeat(np.asarray(ids, dtype=object), counts), pa.string()),
                   pa.array(self.item_ids[rows], pa.string()), pa.array(ranks), pa.array(scores)]  # fmt: skip
        if self.explain_terms is not None:
            columns.append(pa.array([asdict(e) for pick in picks for e in pick.explanations or []], EXPLANATION))
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)


def _listed(value: object) -> bool:
    return isinstance(value, list | tuple | np.ndarray)


def _given(features: pd.DataFrame) -> np.ndarray:
    """Whether each row gives any feature (a value, or a non-empty list)."""
    given = np.zeros(len(features), dtype=bool)
    for column in features:
        given |= features[column].map(lambda v: len(v) > 0 if _listed(v) else not pd.isna(v)).to_numpy(dtype=bool)
    return given


# ----------------------------------------------------------------------------- output
def check_output(path: Path) -> str:
    """The output's format; fails now, before any work, when the path cannot be written."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise BatchError(f"{path}: unknown output format {path.suffix!r}; use {', '.join(FORMATS)}")
    if path.is_dir():
        raise BatchError(f"{path}: cannot write the output: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"):
            pass
    except OSError as error:
        raise BatchError(f"{path}: cannot write the output: {error.strerror or error}") from None
    return kind


def write_batches(path: Path, kind: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    """Write the batches to ``path`` whole or not at all (a temporary file renamed into place);
    returns the rows written. Small batches are gathered into groups of ``ROWS_PER_GROUP`` rows."""
    written = 0
    if kind == "csv":  # CSV has no nested values: a struct column (the explanations) is written as JSON text
        nested = [i for i, f in enumerate(schema) if pa.types.is_struct(f.type)]
        schema = pa.schema([pa.field(f.name, pa.string()) if i in nested else f for i, f in enumerate(schema)])
        batches = (_as_json(batch, nested, schema) for batch in batches)

    def write(tmp: Path) -> None:
        nonlocal written
        with pq.ParquetWriter(tmp, schema) if kind == "parquet" else pa_csv.CSVWriter(tmp, schema) as writer:
            pending: list[pa.RecordBatch] = []
            rows = 0
            for batch in batches:
                pending.append(batch)
                rows += batch.num_rows
                if rows >= ROWS_PER_GROUP:
                    writer.write_table(pa.Table.from_batches(pending, schema))
                    written, pending, rows = written + rows, [], 0
            if pending:
                writer.write_table(pa.Table.from_batches(pending, schema))
                written += rows

    atomic_write(path, write)
    return written


def _as_json(batch: pa.RecordBatch, columns: list[int], schema: pa.Schema) -> pa.RecordBatch:
    arrays = [pa.array([json.dumps(v) for v in a.to_pylist()], pa.string()) if i in columns else a for i, a in enumerate(batch.columns)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# ---------------------------------------------------------------------------- commands
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BatchError(f"{self.prog.removeprefix('wdrec ')}: {message}")


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=f"wdrec {command}", description=description, allow_abbrev=False)
    parser.add_argument("--model", required=True, help="bundle directory, models:/name@alias or models:/name/N")
    parser.add_argument("--output", required=True, type=Path, help="the output file: .parquet or .csv")
    parser.add_argument("--tracking-uri", help="the MLflow registry of models:/ URIs (default: $MLFLOW_TRACKING_URI, "
                                                "else sqlite:///mlflow.db, as wdrec fit and wdrec-serve)")  # fmt: skip
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    return parser


def _load(uri: str, tracking_uri: str | None, fast_path: bool = True) -> ServedModel:
    require = os.environ.get("WDREC_FAST_PATH", "").lower() == "require"  # as wdrec-serve: refuse an inexact fast path
    return load_model(uri, "require" if fast_path and require else fast_path, tracking_uri=tracking_uri)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def recommend(argv: list[str]) -> int:
    """``wdrec recommend``: the top K items of each user; returns the number of users."""
    parser = _parser("recommend", "Top-K recommendations for many users, as POST /v1/recommend gives each.")
    parser.add_argument("--users", default="all", help="all (every known user; default) or a CSV/Parquet file with a user_id column")
    parser.add_argument("--k", type=_positive, default=10, help="items per user (default 10)")
    parser.add_argument("--exclude-seen", dest="exclude_seen", action="store_true", default=True,
                        help="leave out the items each user interacted with, as the HTTP API does (default)")  # fmt: skip
    parser.add_argument("--include-seen", dest="exclude_seen", action="store_false", help="keep them")
    parser.add_argument("--batch-users", type=_positive, help=f"users scored together (default: about {BLOCK_SCORES:,} scores per block)")
    parser.add_argument("--explain", action="store_true", help="add each item's explanation (its logit split into named terms)")
    parser.add_argument("--explain-terms", type=_positive, default=5, help="terms per explanation, largest first (default 5)")
    args = parser.parse_args(argv)
    kind = check_output(args.output)
    frame = None if args.users == "all" else read_table(Path(args.users), [USER_ID])  # read before the model loads
    start = time.perf_counter()
    model = _load(args.model, args.tracking_uri)
    users = users_of(model, frame, args.users)
    batch = BatchRecommender(model, args.k, args.exclude_seen, args.batch_users, args.explain_terms if args.explain else None)
    with tqdm(total=len(users.ids), unit="user", desc="recommend", file=sys.stderr, disable=not args.progress) as bar:
        rows = write_batches(args.output, kind, batch.schema, batch.batches(users, bar.update))
    seconds = time.perf_counter() - start
    print(f"{rows:,} recommendations for {len(users.ids):,} users written to {args.output} in {seconds:.1f} s "
          f"(model loaded and catalogue precomputed included)")  # fmt: skip
    return len(users.ids)


def predict(argv: list[str]) -> int:
    """``wdrec predict``: a score for each (user, item) pair of the input; returns the number of pairs."""
    parser = _parser("predict", "Scores for (user_id, item_id) pairs, as POST /v1/score gives them.")
    parser.add_argument("--input", required=True, type=Path, help="a CSV/Parquet file with user_id and item_id columns")
    args = parser.parse_args(argv)
    kind = check_output(args.output)
    pairs = read_table(args.input, [USER_ID, ITEM_ID])
    start = time.perf_counter()
    scorer = _load(args.model, args.tracking_uri, fast_path=False).reference
    try:
        scorer.item_rows(pairs[ITEM_ID].tolist())
    except UnknownItemsError as error:
        raise BatchError(f"{args.input}: column '{ITEM_ID}': {error}") from None
    with tqdm(total=len(pairs), unit="pair", desc="predict", file=sys.stderr, disable=not args.progress) as bar:

        def batches() -> Iterator[pa.RecordBatch]:
            for at in range(0, len(pairs), PAIRS_PER_CHUNK):
                chunk = pairs.iloc[at : at + PAIRS_PER_CHUNK]
                scores = scorer.score_pairs(chunk[USER_ID].tolist(), chunk[ITEM_ID].tolist())
                yield pa.RecordBatch.from_arrays(
                    [pa.array(chunk[USER_ID], pa.string()), pa.array(chunk[ITEM_ID], pa.string()), pa.array(scores)], schema=SCORES
                )
                bar.update(len(chunk))

        rows = write_batches(args.output, kind, SCORES, batches())
    print(f"{rows:,} scores written to {args.output} in {time.perf_counter() - start:.1f} s (model loaded included)")
    return rows


COMMANDS = {"recommend": recommend, "predict": predict}


def main(argv: list[str]) -> None:
    """``wdrec recommend|predict <options>`` (``argv[0]`` names the command): bad input ends it with
    one line ``wdrec: ...`` and exit status 2."""
    try:
        COMMANDS[argv[0]](argv[1:])
    except (BatchError, ModelLoadError, DataError) as error:
        print(f"wdrec: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2)
