"""``wdrec recommend`` and ``wdrec predict`` through the ``wdrec`` entry point (in process), on the
trained MovieLens bundle: the same recommendations as the HTTP path, both output formats, cold
starts from a users file, and bad input refused in one line without leaving a file."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from commands import main_in_process

from serving.batch import top_k_rows
from serving.loader import load_model
from serving.precomputed import Limits, PrecomputedScorer
from serving.recommender import recommend, top_k
from serving.served_model import ServedModel
from wdrec.export.explain import explain

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(bundle: Path) -> ServedModel:
    return load_model(str(bundle))


def run(argv: list[str], folder: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return main_in_process(argv, env or {}, folder)


def http_path(model: ServedModel, user: str, k: int, exclude_seen: bool = True, features: dict | None = None) -> list[tuple[str, float]]:
    answer = recommend(model, user, k, exclude_seen=exclude_seen, user_features=features)
    return [(item["item_id"], item["score"]) for item in answer.items]


def per_user(table: pd.DataFrame) -> dict[str, list[tuple[str, float]]]:
    return {user: list(zip(rows["item_id"], rows["score"], strict=True)) for user, rows in table.groupby("user_id", sort=False)}


def assert_same(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [item for item, _ in got] == [item for item, _ in expected]
    assert [score for _, score in got] == pytest.approx([score for _, score in expected], abs=1e-5)


# ------------------------------------------------------------------------- recommend
def test_recommend_all_users_equals_the_http_path(model: ServedModel, bundle: Path, tmp_path: Path) -> None:
    code, out, err = run(["recommend", "--model", str(bundle), "--users", "all", "--k", "10", "--output", "recs.parquet"], tmp_path)
    assert code == 0, err
    table = pq.read_table(tmp_path / "recs.parquet")
    assert table.schema.names == ["user_id", "item_id", "rank", "score"]
    assert (table.schema.field("user_id").type, table.schema.field("item_id").type) == (pa.string(), pa.string())
    frame = table.to_pandas()
    users = list(model.user_rows)
    assert frame["user_id"].unique().tolist() == users and len(frame) == 10 * len(users)
    assert (frame.groupby("user_id", sort=False)["rank"].apply(list) == [list(range(1, 11))] * len(users)).all()
    got = per_user(frame)
    for user in users[::37]:
        assert_same(got[user], http_path(model, user, 10))
    seen = set(model.catalogue.ids[r] for r in model.reference.seen_rows(model.user_rows["196"]).tolist())
    assert not seen & {item for item, _ in got["196"]}
    assert "recommend: 100%" in err and "943/943" in err  # the progress bar, on stderr
    assert out.count("\n") == 1 and out.startswith("9,430 recommendations for 943 users written to recs.parquet")


def test_recommend_users_file_to_csv(model: ServedModel, bundle: Path, tmp_path: Path) -> None:
    """Known users, a repeated id, cold starts with the file's feature columns (a history as
    ``|``-separated text) and one with none; seen items kept (--include-seen); small blocks."""
    users = pd.DataFrame({
        "user_id": ["196", "new-1", "7", "196", "new-2", "42", "new-3"],
        "age": ["", "31", "", "", "", "", "67"],
        "occupation": ["", "engineer", "", "", "", "", ""],
        "history": ["", "50|1|181", "", "", "", "", ""],
        "unrelated": ["x"] * 7,
    })  # fmt: skip
    users.to_csv(tmp_path / "users.csv", index=False)
    argv = ["recommend", "--model", str(bundle), "--users", "users.csv", "--k", "7", "--include-seen", "--batch-users", "3",
            "--output", "out/recs.csv"]  # fmt: skip
    code, _, err = run(argv, tmp_path)
    assert code == 0, err
    frame = pd.read_csv(tmp_path / "out" / "recs.csv", dtype={"user_id": str, "item_id": str})
    assert frame.columns.tolist() == ["user_id", "item_id", "rank", "score"]
    got = per_user(frame)
    assert list(got) == ["196", "new-1", "7", "new-2", "42", "new-3"]
    assert_same(got["new-1"], http_path(model, "new-1", 7, False, {"age": 31, "occupation": "engineer", "history": ["50", "1", "181"]}))
    assert_same(got["new-3"], http_path(model, "new-3", 7, False, {"age": 67}))
    assert_same(got["new-2"], http_path(model, "new-2", 7, False))
    for user in ("196", "7", "42"):
        assert_same(got[user], http_path(model, user, 7, False))
    assert got["196"] != http_path(model, "196", 7)  # seen items were kept: they change the list


def test_recommend_with_explanations(model: ServedModel, bundle: Path, tmp_path: Path) -> None:
    """``--explain``: each item's terms, as ``explain`` gives them for the user (deep part split, as
    over HTTP); they add up to the logit, whose sigmoid is the score. Parquet: a struct; CSV: its JSON."""
    pd.DataFrame({"user_id": ["196", "new-1", "nobody"], "age": ["", "31", ""]}).to_csv(tmp_path / "users.csv", index=False)
    for output in ("recs.parquet", "recs.csv"):
        argv = ["recommend", "--model", str(bundle), "--users", "users.csv", "--k", "3", "--explain", "--explain-terms", "4",
                "--output", output]  # fmt: skip
        code, _, err = run(argv, tmp_path)
        assert code == 0, err
    rows = pq.read_table(tmp_path / "recs.parquet").to_pylist()
    assert len(rows) == 9 and all(len(row["explanation"]["terms"]) == 4 for row in rows)
    csv = pd.read_csv(tmp_path / "recs.csv", dtype={"user_id": str, "item_id": str})
    assert [json.loads(text) for text in csv["explanation"]] == [row["explanation"] for row in rows]
    users = {"196": model.user("196"), "new-1": model.user("new-1", {"age": 31}), "nobody": model.user("nobody")}
    for user, group in itertools.groupby(rows, key=lambda row: row["user_id"]):
        group = list(group)
        items = model.catalogue.rows([row["item_id"] for row in group], "item_id")
        expected = explain(model.reference, users[user].features, items, 4, split_deep=True)
        for row, explanation in zip(group, expected, strict=True):
            got = row["explanation"]
            assert got == {"logit": explanation.logit, "rest": explanation.rest,
                           "terms": [{"name": t.name, "value": t.value, "kind": t.kind} for t in explanation.terms]}  # fmt: skip
            assert math.fsum(t["value"] for t in got["terms"]) + got["rest"] == pytest.approx(got["logit"], abs=1e-9)
            assert 1 / (1 + math.exp(-got["logit"])) == pytest.approx(row["score"], abs=1e-5)


def test_score_users_equals_score_per_user(model: ServedModel) -> None:
    """Both plans (MovieLens fits every budget; the large-catalogue one precomputes nothing), with
    seen items skipped for some users: each row equals the one-user path where it is not skipped."""
    reference = model.reference
    rows = torch.arange(0, len(reference.user_index), 131)
    users = reference.users.take(rows)
    skip = torch.zeros((len(rows), len(reference.item_ids)), dtype=torch.bool)
    for i, row in enumerate(rows.tolist()[::2]):
        skip[2 * i, reference.seen_rows(row)] = True
    for limits in (Limits(), Limits(chunk=500, deep_block=300, cross_sums=0, known_wide=0, known_hidden=0)):
        precomputed = PrecomputedScorer(reference, limits)
        for known in (rows, None):
            block = precomputed.score_users(users, known, None, skip)
            for i, row in enumerate(rows.tolist()):
                one = precomputed.score(users.take(torch.tensor([i])), None, None if known is None else row, skip[i])
                torch.testing.assert_close(block[i][~skip[i]], one[~skip[i]], atol=1e-6, rtol=0)
                exact = reference.score_user(users.take(torch.tensor([i])))
                torch.testing.assert_close(block[i][~skip[i]], exact[~skip[i]], atol=1e-5, rtol=0)


def test_top_k_rows_is_top_k_per_row() -> None:
    """Ties across the K-th place, ties inside the top K, rows with fewer finite scores than K."""
    inf = math.inf
    scores = torch.tensor([
        [0.1, 0.9, 0.5, 0.7, 0.3, 0.2],
        [0.5, 0.5, 0.9, 0.5, 0.1, 0.5],  # four tied for two places: the first two by position
        [0.9, 0.2, 0.9, 0.2, 0.1, 0.0],  # a tie inside the top K
        [-inf, 0.3, -inf, -inf, -inf, -inf],  # one finite score
        [-inf] * 6,
    ])  # fmt: skip
    for k in (1, 3, 6, 9):
        for (positions, values), row in zip(top_k_rows(scores, k), scores, strict=True):
            expected = top_k(row, k)
            assert positions.tolist() == expected.tolist() and values.tolist() == row[expected].tolist()


# --------------------------------------------------------------------------- predict
def test_predict_scores_pairs_from_the_registry(model: ServedModel, trained_run, tmp_path: Path) -> None:  # noqa: ANN001
    pairs = pd.DataFrame({"user_id": [196, 196, 7, 999999], "item_id": [242, 302, 50, 50]})
    pq.write_table(pa.Table.from_pandas(pairs), tmp_path / "pairs.parquet")
    argv = ["predict", "--model", "models:/wdrec@champion", "--input", "pairs.parquet", "--output", "scored.parquet"]
    code, _, err = run(argv, tmp_path, {"MLFLOW_TRACKING_URI": trained_run.tracking_uri})
    assert code == 0, err
    frame = pd.read_parquet(tmp_path / "scored.parquet")
    assert frame.columns.tolist() == ["user_id", "item_id", "score"]
    assert frame["user_id"].tolist() == ["196", "196", "7", "999999"] and frame["item_id"].tolist() == ["242", "302", "50", "50"]
    for user, item, score in frame.itertuples(index=False):
        assert score == pytest.approx(model.score(model.user(user), model.catalogue.rows([item], "item_id")).item(), abs=1e-5)
    assert "predict: 100%" in err


# ------------------------------------------------------------------------ bad input
BAD = {
    "unknown model": (["recommend", "--model", "models:/nope@champion"], ["models:/nope@champion", "not found"]),
    "unreachable registry": (["recommend", "--model", "models:/wdrec@champion", "--tracking-uri", "http://127.0.0.1:9"],
                             ["http://127.0.0.1:9", "unreachable"]),
    "no user_id column": (["recommend", "--model", "{bundle}", "--users", "items.csv"], ["items.csv", "'user_id'"]),
    "no item_id column": (["predict", "--model", "{bundle}", "--input", "users.csv"], ["users.csv", "'item_id'"]),
    "unknown item": (["predict", "--model", "{bundle}", "--input", "pairs.csv"], ["pairs.csv", "'item_id'", "'no-such-item'"]),
    "unwritable output": (["recommend", "--model", "{bundle}", "--output", "users.csv/recs.parquet"], ["users.csv/recs.parquet", "cannot write"]),
    "unknown extension": (["recommend", "--model", "{bundle}", "--output", "recs.json"], ["recs.json", "'.json'"]),
    "bad k": (["recommend", "--model", "{bundle}", "--k", "0"], ["--k"]),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_leaves_no_file(case: str, bundle: Path, trained_run, tmp_path: Path) -> None:  # noqa: ANN001
    argv, named = BAD[case]
    pd.DataFrame({"item_id": ["1"]}).to_csv(tmp_path / "items.csv", index=False)
    pd.DataFrame({"user_id": ["196"]}).to_csv(tmp_path / "users.csv", index=False)
    pd.DataFrame({"user_id": ["196", "196"], "item_id": ["1", "no-such-item"]}).to_csv(tmp_path / "pairs.csv", index=False)
    before = set(tmp_path.iterdir())
    argv = [a.replace("{bundle}", str(bundle)) for a in argv]
    if "--output" not in argv:
        argv += ["--output", "out.parquet"]
    code, out, err = run(argv, tmp_path, {"MLFLOW_TRACKING_URI": trained_run.tracking_uri})
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wdrec: "), err
    assert all(part in lines[0] for part in named), lines[0]
    assert set(tmp_path.iterdir()) == before  # no output, no temporary file
