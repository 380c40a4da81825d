"""POST /v1/embeddings."""

from fastapi import APIRouter, Header, Request

from multai.openai.embeddings import CreateEmbeddingResponse, EmbeddingRequest
from rest_bridge.auth import admit
from rest_bridge.routes.disconnect import unless_disconnected
from rest_bridge.serving.embeddings import EmbeddingServing

router = APIRouter()


@router.post("/v1/embeddings", response_model=CreateEmbeddingResponse)
async def create_embeddings(
    body: EmbeddingRequest,
    request: Request,
    x_multai_priority: str | None = Header(None, description="Queue level 0, 1 or 2; overrides `priority`."),
) -> CreateEmbeddingResponse:
    """One unit-length vector per input, as floats or base64-encoded float32."""
    serving: EmbeddingServing = request.app.state.embeddings
    work = serving.create(
        body, await admit(request, body.model, x_multai_priority, body.priority), request.state.request_id
    )
    return await unless_disconnected(request, work)
