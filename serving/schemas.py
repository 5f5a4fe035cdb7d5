"""Request and response bodies of the HTTP API (DESIGN.md, "HTTP API (serving)").

Ids are strings on the wire; an integer is accepted and read as its decimal text
(``196`` and ``"196"`` are the same user). Limits that come from the settings (``k`` up to
``max_k``, id lists up to ``max_ids``) are checked by the routers, which know the settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

MAX_ID_LENGTH = 256
MAX_EXPLAIN_TERMS = 50


def _as_id(value: Any) -> Any:
    if isinstance(value, bool):  # bool is an int subclass; true is not an id
        raise ValueError("an id is a string or an integer, not a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError("an id is a string or an integer")


Id = Annotated[
    str,
    BeforeValidator(_as_id),
    Field(min_length=1, max_length=MAX_ID_LENGTH),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}], "description": "an id; integers read as decimal text"}),
]
UserId = Annotated[
    str,
    BeforeValidator(_as_id),
    Field(min_length=1, max_length=MAX_ID_LENGTH),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}], "description": "a user id; unknown ids are cold starts"}),
]


def _value_check(allow_null: bool) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        scalar = (str, int, float, bool)
        if isinstance(value, scalar) or (allow_null and value is None):
            return value
        if isinstance(value, list) and all(isinstance(v, scalar) for v in value):
            return value
        raise ValueError("expected a string, a number, a boolean, or a list of them")

    return check


_VALUE_SCHEMA = {"anyOf": [{"type": t} for t in ("string", "number", "boolean", "array")]}
# One error per bad value, at the value's own location (a plain union would report one per member).
FeatureValue = Annotated[Any, AfterValidator(_value_check(allow_null=True)), WithJsonSchema({**_VALUE_SCHEMA, "nullable": True})]
FilterValue = Annotated[Any, AfterValidator(_value_check(allow_null=False)), WithJsonSchema(_VALUE_SCHEMA)]


class _Request(BaseModel):
    # A misspelt field is an error, not silently ignored; and a value has the schema's type
    # exactly (strict): `"k": true` or `"exclude_seen": 1` is a 422, not k=1 or True.
    model_config = ConfigDict(extra="forbid", strict=True)


class RecommendRequest(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"user_id": "196", "k": 10, "exclude_seen": True},
                {"user_id": "196", "k": 5, "candidates": ["242", "302", "377", "51"]},
                {"user_id": "new-user", "k": 10, "user_features": {"age": 25, "gender": "F", "occupation": "writer"}},
                {"user_id": "196", "k": 10, "filters": {"genres": "Comedy"}, "exclude_items": ["1", "50"]},
                {"user_id": "196", "k": 3, "explain": True, "explain_terms": 5},
            ]
        },
    )

    user_id: UserId
    k: int = Field(10, ge=1, description="how many items; at most the server's max_k")
    exclude_seen: bool = Field(True, description="leave out items the user interacted with")
    candidates: list[Id] | None = Field(None, description="rank only these items (default: the whole catalogue)")
    user_features: dict[str, FeatureValue] | None = Field(
        None, max_length=64, description="raw features of an unknown user (cold start), as in the users table"
    )
    exclude_items: list[Id] | None = Field(None, description="never return these items")
    filters: dict[str, FilterValue] | None = Field(
        None, max_length=16, description="item column → value (or any of a list): equals, or contains for list columns"
    )
    explain: bool = Field(False, description="add each item's explanation: its logit split into named contributions")
    explain_terms: int = Field(5, ge=1, le=MAX_EXPLAIN_TERMS, description="contributions listed per explanation, largest first")


class Term(BaseModel):
    name: str = Field(description='what contributes, e.g. "occupation=writer × genres=Drama", "deep: this item\'s features"')
    value: float = Field(description="its share of the logit")
    kind: str = Field(description='"wide" (a weight of the linear part) or "deep" (the MLP\'s share)')


class Explanation(BaseModel):
    """``sum(terms[].value) + rest == logit``; see wdrec/export/explain.py for how the deep part is split."""

    logit: float = Field(description="the network's output before its output activation: log-odds (binary), rating (regression)")
    terms: list[Term] = Field(description="the largest contributions by magnitude, largest first")
    rest: float = Field(description="what every other contribution adds up to")


class CatalogueItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # the bundle's display columns (title, genres, ...)

    item_id: str
    score: float


class RecommendedItem(CatalogueItem):
    score: float = Field(description="probability (binary model) or predicted rating (regression)")
    explanation: Explanation | None = Field(None, description='only when the request asked for it ("explain": true)')


class RecommendResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "196",
                    "items": [{"item_id": "50", "score": 0.93, "title": "Star Wars", "genres": ["Action", "Sci-Fi"]}],
                    "cold_start": False,
                    "model_version": "3",
                },
                {
                    "user_id": "196",
                    "items": [{"item_id": "172", "score": 0.81, "title": "Empire Strikes Back, The", "explanation": {
                        "logit": 1.45,
                        "terms": [{"name": "history: Star Wars × this item", "value": 0.62, "kind": "wide"},
                                  {"name": "deep: this item's features", "value": 0.41, "kind": "deep"},
                                  {"name": "item bias", "value": 0.3, "kind": "wide"}],
                        "rest": 0.12}}],
                    "cold_start": False,
                    "model_version": "3",
                },
            ]
        }
    )

    user_id: str
    items: list[RecommendedItem]
    cold_start: bool
    model_version: str | None


class SimilarItem(CatalogueItem):
    score: float = Field(description="similarity to the item asked about (the method's own scale; cooccurrence: cosine in [0, 1])")


class SimilarResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "item_id": "50",
                    "items": [{"item_id": "181", "score": 0.88, "title": "Return of the Jedi", "genres": ["Action", "Sci-Fi"]}],
                    "method": "cooccurrence",
                    "model_version": "3",
                }
            ]
        }
    )

    item_id: str
    items: list[SimilarItem] = Field(description="most similar first; never the item itself")
    method: str = Field(description="how similarity is measured (wdrec/export/similar.py)")
    model_version: str | None


class ScoreRequest(_Request):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"user_id": "196", "item_ids": ["242", "302"]}, {"user_id": 196, "item_ids": [242, 302]}]},
    )

    user_id: UserId
    item_ids: list[Id] = Field(description="items to score, in the order the scores come back")
    user_features: dict[str, FeatureValue] | None = Field(None, max_length=64, description="cold start, as in /v1/recommend")


class ScoreResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"scores": [0.71, 0.12], "model_version": "3", "cold_start": False}]})

    scores: list[float | None]
    model_version: str | None
    cold_start: bool


class UsersResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"users": ["19", "190", "191"], "total": 11}]})

    users: list[str] = Field(description="matching known user ids, shortest first, then in text order")
    total: int = Field(description="how many known users match (``users`` holds at most ``limit`` of them)")


class ModelResponse(BaseModel):
    name: str
    version: str | None
    run_id: str | None
    task: str = Field(description="binary (scores are probabilities) or regression (predicted ratings)")
    metrics: dict[str, float | None]
    num_users: int
    num_items: int
    features: list[dict[str, Any]]
    crosses: list[list[str]]
    cold_start_features: list[str]
    loaded_at: str
    source: str
    fast_path: bool
    retrieval: str = Field(description='"full" (each request scores the whole catalogue) or "two_stage(N)" (N candidates, then ranked)')
    request_ms: float = Field(description="compute time of one top-10 recommendation, measured when the model loaded")


class ReloadRequest(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"model": "models:/wdrec@champion"}, {}]})

    model: str | None = Field(None, max_length=4096, description="bundle path or models:/ URI (default: the one served at start)")


class WorkerStatus(BaseModel):
    """One worker process of a server started with several (``wdrec-serve --workers N``)."""

    pid: int
    generation: int = Field(description="the published model generation it serves")
    version: str | None
    error: str | None = Field(None, description="why its last load failed (it serves its previous model meanwhile)")


class ReloadResponse(BaseModel):
    old_version: str | None
    new_version: str | None
    model: str
    loaded_at: str
    generation: int | None = Field(None, description="several workers: the published generation; null in one process")
    workers: list[WorkerStatus] = Field(default_factory=list, description="several workers: every live worker, each serving "
                                        "the new model; empty in one process")  # fmt: skip


class Problem(BaseModel):
    field: str = Field(description="the field at fault, dotted (e.g. candidates.3), or body")
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx body: ``detail`` is a message, or one problem per invalid field (422); ``field`` names the field."""

    model_config = ConfigDict(extra="allow")  # e.g. unknown_ids for unknown item ids

    detail: str | list[Problem]
    field: str | None = None


class Health(BaseModel):
    status: str
    model_version: str | None = None
