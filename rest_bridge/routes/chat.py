"""POST /v1/chat/completions."""

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from multai.common.v1 import common_pb2
from multai.openai.chat import ChatCompletion, ChatCompletionRequest
from rest_bridge.auth import admit
from rest_bridge.routes.disconnect import unless_disconnected
from rest_bridge.serving.chat import ChatServing, new_chat_completion_id
from rest_bridge.serving.generation import sse_with_errors

router = APIRouter()


@router.post("/v1/chat/completions", response_model=ChatCompletion)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    x_multai_priority: str | None = Header(None, description="Queue level 0, 1 or 2; overrides `priority`."),
) -> ChatCompletion | StreamingResponse:
    """Creates a model response for the conversation, streamed as server-sent events when `stream` is true.

    Conversations for a vision model (or with image parts) go to the vision service.
    """
    return await respond(body, request, await admit(request, body.model, x_multai_priority, body.priority))


async def respond(
    body: ChatCompletionRequest, request: Request, priority: common_pb2.Priority.ValueType
) -> ChatCompletion | StreamingResponse:
    """The chat completion response, whole or as server-sent events."""
    serving: ChatServing = request.app.state.chat
    stream = await unless_disconnected(request, serving.open(body, priority, request.state.request_id))
    completion_id = new_chat_completion_id()
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = serving.events(stream, completion_id, include_usage)
        return StreamingResponse(sse_with_errors(events), media_type="text/event-stream")
    return await unless_disconnected(request, serving.complete(stream, completion_id))
