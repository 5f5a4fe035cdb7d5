"""``GET /v1/items/{item_id}/similar``: the catalogue items most like one item (wdrec/export/similar.py)."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from serving.catalogue import RequestError
from serving.deps import ModelDep, ScoringDep, SettingsDep
from serving.recommender import scored_items
from serving.schemas import MAX_ID_LENGTH, ErrorResponse, SimilarResponse

router = APIRouter(prefix="/v1/items", tags=["items"])


@router.get(
    "/{item_id}/similar",
    response_model=SimilarResponse,
    responses={
        404: {"model": ErrorResponse, "description": "no such item in the catalogue (field: item_id)"},
        422: {"model": ErrorResponse, "description": "k out of range (above the server's max_k), or an id too long"},
        503: {"model": ErrorResponse, "description": "no model loaded"},
    },
)
async def similar_items(
    model: ModelDep,
    settings: SettingsDep,
    scoring: ScoringDep,
    item_id: Annotated[str, Path(max_length=MAX_ID_LENGTH, description="a catalogue item id", examples=["50"])],
    k: Annotated[int, Query(ge=1, description="how many items; at most the server's max_k")] = 10,
) -> dict[str, Any]:
    """The ``k`` items most similar to ``item_id``, most similar first, with the catalogue's display
    fields; ``method`` says how similarity is measured. The item itself is never among them."""
    if k > settings.max_k:
        raise RequestError("k", f"must be at most {settings.max_k}, got {k}")
    row = model.catalogue.row_of.get(item_id)
    if row is None:
        raise RequestError("item_id", f"unknown item id {item_id!r}", status=404)
    found, scores = await scoring(partial(model.similar.of, row, k))
    return {"item_id": item_id, "items": scored_items(model, found, scores), "method": model.similar.method,
            "model_version": model.info.version}  # fmt: skip

