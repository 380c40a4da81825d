"""GET /v1/models and /v1/models/{model}."""

from fastapi import APIRouter, Request

from multai.openai.models import ModelCard, ModelList
from rest_bridge.serving.models import ModelsServing

router = APIRouter()


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """Lists the installed models of every service; fixtures are marked `fixture: true`."""
    serving: ModelsServing = request.app.state.models
    return await serving.listing(request.state.request_id)


@router.get("/v1/models/{model}", response_model=ModelCard)
async def retrieve_model(model: str, request: Request) -> ModelCard:
    """One model, by id or alias."""
    serving: ModelsServing = request.app.state.models
    return await serving.retrieve(model, request.state.request_id)
