"""POST /v1/vision, the seed design's one-image endpoint."""

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from multai.openai.chat import ChatCompletion
from multai.openai.vision import VisionRequest
from rest_bridge.auth import admit
from rest_bridge.routes.chat import respond

router = APIRouter()


@router.post("/v1/vision", response_model=ChatCompletion)
async def create_vision_completion(
    body: VisionRequest,
    request: Request,
    x_multai_priority: str | None = Header(None, description="Queue level 0, 1 or 2; overrides `priority`."),
) -> ChatCompletion | StreamingResponse:
    """Answers a prompt about one image with a vision model; the reply is a chat completion."""
    return await respond(
        body.as_chat(), request, await admit(request, body.model, x_multai_priority, body.priority)
    )
