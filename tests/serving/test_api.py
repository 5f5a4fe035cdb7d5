"""The HTTP API against the real bundle of a real (short) training run, in process."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from wdrec.export.bundle import read_bundle
from wdrec.export.scorer import Scorer

USER = "196"


@pytest.fixture(scope="module")
def scorer(bundle) -> Scorer:  # noqa: ANN001
    return Scorer(read_bundle(bundle))


def seen_ids(scorer: Scorer, user: str) -> set[str]:
    return {scorer.item_ids[r] for r in scorer.seen_rows(scorer.user_row(user)).tolist()}


def recommend(client, **body):  # noqa: ANN001, ANN003, ANN201
    response = client.post("/v1/recommend", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# ------------------------------------------------------------------ health, model
def test_health_and_readiness(client) -> None:  # noqa: ANN001
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model_version"] == "1"


def test_model_describes_the_trained_run(client, trained_run) -> None:  # noqa: ANN001
    info = client.get("/v1/model").json()
    assert (info["name"], info["version"], info["run_id"]) == ("wdrec", "1", trained_run.run_id)
    assert (info["num_users"], info["num_items"], info["task"]) == (943, 1682, "binary")
    assert {"item_id", "user_id", "genres"} <= {f["name"] for f in info["features"]}
    assert "val_auc" in info["metrics"] and info["loaded_at"]
    assert {"age", "gender", "occupation"} <= set(info["cold_start_features"])
    assert info["fast_path"] is True


# -------------------------------------------------------------------- recommend
def test_recommend_known_user_excludes_seen_items(client, scorer) -> None:  # noqa: ANN001
    body = recommend(client, user_id=USER, k=10)
    assert body["user_id"] == USER and body["cold_start"] is False and body["model_version"] == "1"
    items = body["items"]
    assert len(items) == 10
    scores = [item["score"] for item in items]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert not {item["item_id"] for item in items} & seen_ids(scorer, USER)
    first = items[0]
    assert isinstance(first["title"], str) and isinstance(first["genres"], list)
    assert isinstance(first["release_year"], int)


def test_recommend_is_the_offline_top_k(client, scorer) -> None:  # noqa: ANN001
    """The served top 10 is the top 10 of Scorer.score_user over the unseen catalogue."""
    row = scorer.user_row(USER)
    offline = scorer.score_user(scorer.users.take(torch.tensor([row]))).clone()
    offline[scorer.seen_rows(row)] = -math.inf
    expected = torch.sort(offline, descending=True, stable=True).indices[:10]
    served = recommend(client, user_id=USER, k=10)["items"]
    assert [i["item_id"] for i in served] == [scorer.item_ids[r] for r in expected.tolist()]
    assert [i["score"] for i in served] == pytest.approx(offline[expected].tolist(), abs=1e-5)


def test_exclude_seen_false_keeps_seen_items(client, scorer) -> None:  # noqa: ANN001
    seen = sorted(seen_ids(scorer, USER))[:5]
    unseen = [i for i in scorer.item_ids[:100] if i not in seen_ids(scorer, USER)][:5]
    kept = recommend(client, user_id=USER, k=10, candidates=seen + unseen, exclude_seen=False)["items"]
    assert {i["item_id"] for i in kept} == set(seen + unseen)
    dropped = recommend(client, user_id=USER, k=10, candidates=seen + unseen, exclude_seen=True)["items"]
    assert {i["item_id"] for i in dropped} == set(unseen)


def test_candidates_are_ranked_by_score(client) -> None:  # noqa: ANN001
    candidates = ["242", "302", "377", "51", "346", "474", "265", "465"]
    items = recommend(client, user_id="nobody-here", k=5, candidates=candidates)["items"]
    assert len(items) == 5 and {i["item_id"] for i in items} <= set(candidates)
    scores = client.post("/v1/score", json={"user_id": "nobody-here", "item_ids": candidates}).json()["scores"]
    best = sorted(zip(scores, candidates, strict=True), key=lambda p: -p[0])[:5]
    assert [i["item_id"] for i in items] == [c for _, c in best]


def test_integer_ids_are_read_as_decimal_text(client) -> None:  # noqa: ANN001
    as_text = recommend(client, user_id="196", k=3, candidates=["242", "302", "51"])
    as_int = recommend(client, user_id=196, k=3, candidates=[242, 302, 51])
    assert as_int == as_text and as_int["user_id"] == "196"


def test_cold_start_without_features(client, scorer) -> None:  # noqa: ANN001
    body = recommend(client, user_id="never-seen", k=10)
    assert body["cold_start"] is True and len(body["items"]) == 10
    ids = [i["item_id"] for i in body["items"]]
    offline = scorer.score_pairs(["never-seen"] * 10, ids)  # unknown users score as the all-unknown row
    assert [i["score"] for i in body["items"]] == pytest.approx(offline.tolist(), abs=1e-5)


def test_cold_start_with_features(client, scorer) -> None:  # noqa: ANN001
    features = {"age": 25, "gender": "F", "occupation": "writer"}
    body = recommend(client, user_id="new-user", k=10, user_features=features)
    assert body["cold_start"] is True
    ids = [i["item_id"] for i in body["items"]]
    offline = scorer.score_user(scorer.encode_user_features(features), scorer.item_rows(ids))
    assert [i["score"] for i in body["items"]] == pytest.approx(offline.tolist(), abs=1e-5)
    plain = client.post("/v1/score", json={"user_id": "new-user", "item_ids": ids}).json()
    assert plain["cold_start"] is True and plain["scores"] != pytest.approx(offline.tolist(), abs=1e-7)


def test_cold_start_history_counts_as_seen(client) -> None:  # noqa: ANN001
    history = ["50", "181", "100"]
    body = recommend(client, user_id="new-user", k=20, user_features={"gender": "M", "history": history})
    assert not {i["item_id"] for i in body["items"]} & set(history)


def test_filters_restrict_the_catalogue(client) -> None:  # noqa: ANN001
    comedies = recommend(client, user_id=USER, k=20, filters={"genres": "Comedy"})["items"]
    assert len(comedies) == 20 and all("Comedy" in i["genres"] for i in comedies)
    either = recommend(client, user_id=USER, k=20, filters={"genres": ["Horror", "Western"]})["items"]
    assert all({"Horror", "Western"} & set(i["genres"]) for i in either)
    old = recommend(client, user_id=USER, k=5, filters={"release_year": 1977, "genres": "Sci-Fi"})["items"]
    assert old and all(i["release_year"] == 1977 and "Sci-Fi" in i["genres"] for i in old)
    none = recommend(client, user_id=USER, k=5, filters={"genres": "No Such Genre"})["items"]
    assert none == []


def test_exclude_items(client) -> None:  # noqa: ANN001
    top = [i["item_id"] for i in recommend(client, user_id=USER, k=3)["items"]]
    after = [i["item_id"] for i in recommend(client, user_id=USER, k=3, exclude_items=top[:2])["items"]]
    assert after[0] == top[2] and not set(top[:2]) & set(after)


def test_k_larger_than_what_is_left(client) -> None:  # noqa: ANN001
    items = recommend(client, user_id=USER, k=100, candidates=["1", "2", "3"], exclude_seen=False)["items"]
    assert len(items) == 3


# ------------------------------------------------------------------------ score
def test_score_in_request_order(client, scorer) -> None:  # noqa: ANN001
    ids = ["302", "242", "1", "242"]
    body = client.post("/v1/score", json={"user_id": USER, "item_ids": ids}).json()
    assert body["model_version"] == "1" and body["cold_start"] is False
    assert body["scores"] == pytest.approx(scorer.score_pairs([USER] * 4, ids).tolist(), abs=1e-5)
    assert body["scores"][1] == body["scores"][3] and all(0.0 <= s <= 1.0 for s in body["scores"])


def test_score_names_unknown_items(client) -> None:  # noqa: ANN001
    response = client.post("/v1/score", json={"user_id": USER, "item_ids": ["242", "no-such", "99999"]})
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == "item_ids" and body["unknown_ids"] == ["no-such", "99999"]
    assert "no-such" in body["detail"] and "99999" in body["detail"]


def test_served_scores_equal_the_offline_scores(client, trained_run, bundle, scorer) -> None:  # noqa: ANN001
    """/v1/score == Scorer.score_pairs == the network on the data module's own training batch path."""
    datamodule = trained_run.cli.datamodule
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.val_dataloader()[0])), 0)
    offline = read_bundle(bundle).net.predict(batch)
    users = datamodule.users_frame["user_id"].astype(str).to_numpy()[batch["user"].numpy()]
    items = datamodule.items_frame["item_id"].astype(str).to_numpy()[batch["item"].numpy()]
    for user in list(dict.fromkeys(users))[:8]:
        rows = [j for j, u in enumerate(users) if u == user]
        ids = [str(items[j]) for j in rows]
        served = client.post("/v1/score", json={"user_id": str(user), "item_ids": ids}).json()["scores"]
        assert served == pytest.approx(scorer.score_pairs([str(user)] * len(ids), ids).tolist(), abs=1e-5)
        assert served == pytest.approx(offline[rows].tolist(), abs=1e-5)


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/recommend", {"user_id": USER, "k": 0}, "k"),
        ("/v1/recommend", {"user_id": USER, "k": 101}, "k"),
        ("/v1/recommend", {"user_id": USER, "k": "ten"}, "k"),
        ("/v1/recommend", {"user_id": USER, "k": 2.5}, "k"),
        # The schema's types, exactly: no coercion of booleans, numeric strings or whole floats.
        ("/v1/recommend", {"user_id": USER, "k": True}, "k"),
        ("/v1/recommend", {"user_id": USER, "k": "10"}, "k"),
        ("/v1/recommend", {"user_id": USER, "k": 10.0}, "k"),
        ("/v1/recommend", {"user_id": USER, "exclude_seen": 1}, "exclude_seen"),
        ("/v1/recommend", {"user_id": USER, "explain": "true"}, "explain"),
        ("/v1/recommend", {"user_id": USER, "explain": True, "explain_terms": False}, "explain_terms"),
        ("/v1/recommend", {"k": 10}, "user_id"),
        ("/v1/recommend", {"user_id": True}, "user_id"),
        ("/v1/recommend", {"user_id": {"id": 1}}, "user_id"),
        ("/v1/recommend", {"user_id": ""}, "user_id"),
        ("/v1/recommend", {"user_id": USER, "exclude_seen": "maybe"}, "exclude_seen"),
        ("/v1/recommend", {"user_id": USER, "candidates": "242"}, "candidates"),
        ("/v1/recommend", {"user_id": USER, "candidates": ["242", None]}, "candidates.1"),
        ("/v1/recommend", {"user_id": USER, "candidates": [str(i) for i in range(1, 52)]}, "candidates"),
        ("/v1/recommend", {"user_id": USER, "candidates": ["242", "nope"]}, "candidates"),
        ("/v1/recommend", {"user_id": USER, "exclude_items": [str(i) for i in range(1, 52)]}, "exclude_items"),
        ("/v1/recommend", {"user_id": USER, "exclude_items": ["nope"]}, "exclude_items"),
        ("/v1/recommend", {"user_id": USER, "filters": {"nope": "x"}}, "filters.nope"),
        ("/v1/recommend", {"user_id": USER, "filters": {"release_year": "old"}}, "filters.release_year"),
        ("/v1/recommend", {"user_id": USER, "filters": {"genres": {"a": 1}}}, "filters.genres"),
        ("/v1/recommend", {"user_id": USER, "filters": {"genres": []}}, "filters.genres"),
        ("/v1/recommend", {"user_id": "x", "user_features": {"shoe_size": 44}}, "user_features"),
        ("/v1/recommend", {"user_id": "x", "user_features": {"age": "old"}}, "user_features.age"),
        ("/v1/recommend", {"user_id": "x", "user_features": {"gender": ["F", "M"]}}, "user_features.gender"),
        ("/v1/recommend", {"user_id": USER, "kk": 10}, "kk"),
        ("/v1/score", {"user_id": USER}, "item_ids"),
        ("/v1/score", {"user_id": USER, "item_ids": "242"}, "item_ids"),
        ("/v1/score", {"user_id": USER, "item_ids": [str(i) for i in range(1, 52)]}, "item_ids"),
        ("/v1/score", {"user_id": USER, "item_ids": [1.5]}, "item_ids.0"),
        ("/v1/score", [USER, "242"], "body"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(client, path: str, body: object, field: str) -> None:  # noqa: ANN001
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    fields = [d["field"] for d in detail] if isinstance(detail, list) else [response.json()["field"]]
    assert field in fields, response.text


def test_malformed_json_is_a_4xx(client) -> None:  # noqa: ANN001
    response = client.post("/v1/recommend", content=b'{"user_id": "196", "k": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "body" and "malformed JSON" in response.json()["detail"][0]["msg"]
    empty = client.post("/v1/score", content=b"", headers={"Content-Type": "application/json"})
    assert empty.status_code == 422 and empty.json()["detail"][0]["field"] == "body"
    not_utf8 = client.post("/v1/score", content=b'{"user_id": "\xff"}', headers={"Content-Type": "application/json"})
    assert not_utf8.status_code == 400 and not_utf8.json()["field"] == "body"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_json_body_without_json_content_type_is_a_415(client, content_type: str | None) -> None:  # noqa: ANN001
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = client.post("/v1/recommend", content=json.dumps({"user_id": USER}).encode(), headers=headers)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["detail"]


def test_oversized_body_is_a_413(client) -> None:  # noqa: ANN001
    big = json.dumps({"user_id": USER, "item_ids": ["1"] * 5000}).encode()  # > 16 KiB
    declared = client.post("/v1/score", content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and "body" in declared.json()["detail"]

    def chunks():  # noqa: ANN202 - streamed without Content-Length: the size is only known while reading
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    streamed = client.post("/v1/score", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_unknown_routes_and_methods_answer_json(client) -> None:  # noqa: ANN001
    missing = client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    wrong = client.get("/v1/recommend")
    assert wrong.status_code == 405 and "detail" in wrong.json()


# ----------------------------------------------------------- logs, ids, metrics
def test_request_id_is_echoed_and_logged(client, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    with caplog.at_level(logging.INFO, logger="wdrec.serving.access"):
        response = client.post("/v1/recommend", json={"user_id": USER, "k": 2}, headers={"X-Request-ID": "req-123"})
        generated = client.get("/healthz").headers["x-request-id"]
    assert response.headers["x-request-id"] == "req-123" and len(generated) == 32
    lines = [r for r in caplog.records if r.name == "wdrec.serving.access"]
    line = next(r for r in lines if r.request_id == "req-123")
    assert (line.method, line.path, line.status, line.model_version) == ("POST", "/v1/recommend", 200, "1")
    assert line.latency_ms > 0


def test_metrics_count_requests_and_show_the_model(client) -> None:  # noqa: ANN001
    for _ in range(3):
        client.post("/v1/recommend", json={"user_id": USER, "k": 1})
    client.post("/v1/recommend", json={"user_id": USER, "k": 0})
    text = client.get("/metrics").text
    ok = next(line for line in text.splitlines() if line.startswith('wdrec_http_requests_total{method="POST",route="/v1/recommend",status="200"}'))
    assert float(ok.split()[-1]) >= 3
    assert 'wdrec_http_requests_total{method="POST",route="/v1/recommend",status="422"}' in text
    assert 'wdrec_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/recommend",status="200"}' in text
    assert 'version="1"' in next(line for line in text.splitlines() if line.startswith("wdrec_model_info{"))
    assert "wdrec_model_reloads_total 0.0" in text and "wdrec_model_reload_failures_total 0.0" in text


def test_openapi_documents_examples(client) -> None:  # noqa: ANN001
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/v1/recommend", "/v1/score", "/v1/model", "/admin/reload", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    examples = schema["components"]["schemas"]["RecommendRequest"]["examples"]
    assert any("user_features" in e for e in examples)
