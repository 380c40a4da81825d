"""POST /v1/completions."""

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from multai.openai.completions import Completion, CompletionRequest
from rest_bridge.auth import admit
from rest_bridge.routes.disconnect import unless_disconnected
from rest_bridge.serving.completions import CompletionServing, new_completion_id
from rest_bridge.serving.generation import sse_with_errors

router = APIRouter()


@router.post("/v1/completions", response_model=Completion)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    x_multai_priority: str | None = Header(None, description="Queue level 0, 1 or 2; overrides `priority`."),
) -> Completion | StreamingResponse:
    """Continues the prompt, streamed as server-sent events when `stream` is true."""
    serving: CompletionServing = request.app.state.completions
    priority = await admit(request, body.model, x_multai_priority, body.priority)
    stream = await unless_disconnected(request, serving.open(body, priority, request.state.request_id))
    completion_id = new_completion_id()
    if body.stream:
        return StreamingResponse(
            sse_with_errors(serving.events(body, stream, completion_id)), media_type="text/event-stream"
        )
    return await unless_disconnected(request, serving.complete(body, stream, completion_id))
