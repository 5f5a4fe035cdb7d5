from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from serving.deps import ModelDep
from serving.schemas import ErrorResponse, ModelResponse

router = APIRouter(prefix="/v1", tags=["model"])


@router.get("/model", response_model=ModelResponse, responses={503: {"model": ErrorResponse, "description": "no model loaded"}})
async def model_info(model: ModelDep) -> ModelResponse:
    """What is being served: registered name and version, run, metrics, catalogue size, features, task."""
    return ModelResponse(**asdict(model.info))
