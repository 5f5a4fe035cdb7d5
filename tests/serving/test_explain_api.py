"""``POST /v1/recommend`` with ``explain``: the real trained bundle, through HTTP."""

from __future__ import annotations

import math

import pytest

from wdrec.export.bundle import read_bundle

USER = "196"


def _recommend(client, **body):  # noqa: ANN001, ANN003, ANN201
    response = client.post("/v1/recommend", json=body)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def _adds_up(item: dict, terms: int) -> None:
    explanation = item["explanation"]
    assert set(explanation) == {"logit", "terms", "rest"}
    assert 0 < len(explanation["terms"]) <= terms
    assert abs(math.fsum(t["value"] for t in explanation["terms"]) + explanation["rest"] - explanation["logit"]) < 1e-5
    assert abs(1 / (1 + math.exp(-explanation["logit"])) - item["score"]) < 1e-5  # the served score is its sigmoid
    assert all(t["kind"] in ("wide", "deep") and t["name"] for t in explanation["terms"])


def test_explained_items_add_up_and_name_real_titles(client, bundle) -> None:  # noqa: ANN001
    items = _recommend(client, user_id=USER, k=5, explain=True, explain_terms=50)
    assert len(items) == 5
    for item in items:
        _adds_up(item, 50)
    plain = _recommend(client, user_id=USER, k=5)
    assert [i["item_id"] for i in plain] == [i["item_id"] for i in items]  # explaining changes nothing else
    assert all("explanation" not in item for item in plain)
    names = {t["name"] for item in items for t in item["explanation"]["terms"]}
    titles = set(read_bundle(bundle).items["title"])
    history = [n.removeprefix("history: ").removesuffix(" × this item") for n in names if n.startswith("history: ")]
    assert history and set(history) <= titles, sorted(names)  # e.g. "history: Star Wars", "... × this item"
    assert {"wide bias", "item bias", "deep: this user's features", "deep: this item's features"} <= names
    assert any(n.startswith("occupation=") for n in names) and any(" × genres=" in n for n in names), sorted(names)


def test_cold_starts_are_explained_too(client) -> None:  # noqa: ANN001
    features = {"age": 30, "gender": "F", "occupation": "writer", "history": ["50", "181"]}
    for body in ({"user_id": "nobody-explained", "user_features": features}, {"user_id": "nobody-at-all"}):
        items = _recommend(client, k=3, explain=True, **body)
        for item in items:
            _adds_up(item, 5)
    blank = _recommend(client, user_id="nobody-at-all", k=3, explain=True, explain_terms=50)
    shares = [t["value"] for i in blank for t in i["explanation"]["terms"] if t["name"] == "deep: this user's features"]
    assert all(abs(v) < 1e-6 for v in shares), shares  # the baseline is this very user: 0, to rounding


@pytest.mark.parametrize("terms", [0, -1, 51, "five", 2.5, None])
def test_bad_explain_terms_is_a_422_naming_the_field(client, terms) -> None:  # noqa: ANN001
    response = client.post("/v1/recommend", json={"user_id": USER, "explain": True, "explain_terms": terms})
    assert response.status_code == 422, response.text
    assert [p["field"] for p in response.json()["detail"]] == ["explain_terms"]


def test_bad_explain_is_a_422_naming_the_field(client) -> None:  # noqa: ANN001
    response = client.post("/v1/recommend", json={"user_id": USER, "explain": "please"})
    assert response.status_code == 422 and [p["field"] for p in response.json()["detail"]] == ["explain"]
