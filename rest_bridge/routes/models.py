"""GET /v1/models and /v1/models/{model}."""

from fastapi import APIRouter, Request

from multai.openai.models import ModelCard, ModelList
from rest_bridge.serving.models import ModelsServing, model_not_found
from rest_bridge.usage import current_key

router = APIRouter()


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """Lists the installed models of every service; fixtures are marked `fixture: true`."""
    serving: ModelsServing = request.app.state.models
    listing = await serving.listing(request.state.request_id)
    key = current_key.get()
    if key is None:
        return listing
    return ModelList(data=[card for card in listing.data if key.allows_model([card.id, *card.aliases])])


@router.get("/v1/models/{model}", response_model=ModelCard)
async def retrieve_model(model: str, request: Request) -> ModelCard:
    """One model, by id or alias."""
    serving: ModelsServing = request.app.state.models
    card = await serving.retrieve(model, request.state.request_id)
    key = current_key.get()
    if key is not None and not key.allows_model([card.id, *card.aliases]):
        raise model_not_found(model)
    return card
