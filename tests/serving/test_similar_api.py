"""``GET /v1/items/{item_id}/similar``: the real trained bundle, through HTTP."""

from __future__ import annotations


def test_similar_items_of_star_wars(client) -> None:  # noqa: ANN001
    response = client.get("/v1/items/50/similar", params={"k": 7})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["item_id"], body["method"], body["model_version"]) == ("50", "cooccurrence", "1")
    items = body["items"]
    assert len(items) == 7 and "50" not in {i["item_id"] for i in items}
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert all(i["title"] and isinstance(i["genres"], list) for i in items)
    assert "Return of the Jedi" in {i["title"] for i in items}  # its sequel: watched by most of its viewers
    default = client.get("/v1/items/50/similar").json()["items"]
    assert [i["item_id"] for i in default] == [i["item_id"] for i in client.get("/v1/items/50/similar?k=10").json()["items"]]
    assert [i["item_id"] for i in default][:7] == [i["item_id"] for i in items]


def test_unknown_item_is_a_404_naming_the_field(client) -> None:  # noqa: ANN001
    response = client.get("/v1/items/999999/similar")
    assert response.status_code == 404
    assert response.json()["field"] == "item_id" and "unknown item id '999999'" in response.json()["detail"]


def test_k_out_of_range_is_a_422_naming_k(client) -> None:  # noqa: ANN001
    above = client.get("/v1/items/50/similar", params={"k": 101})  # the tests' max_k is 100
    assert above.status_code == 422 and above.json()["field"] == "k"
    for k in (0, -3, "many"):
        response = client.get("/v1/items/50/similar", params={"k": k})
        assert response.status_code == 422 and [p["field"] for p in response.json()["detail"]] == ["query.k"]
