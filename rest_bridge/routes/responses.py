"""POST /v1/responses."""

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from multai.openai.responses import ResponseObject, ResponsesRequest
from rest_bridge.auth import admit
from rest_bridge.routes.disconnect import unless_disconnected
from rest_bridge.serving.responses import ResponsesServing, new_response_id

router = APIRouter()


@router.post("/v1/responses", response_model=ResponseObject)
async def create_response(
    body: ResponsesRequest,
    request: Request,
    x_multai_priority: str | None = Header(None, description="Queue level 0, 1 or 2; overrides `priority`."),
) -> ResponseObject | StreamingResponse:
    """Creates a model response, streamed as Responses events when `stream` is true.

    Stateless: the request carries the whole conversation; nothing is stored or retrievable later.
    """
    serving: ResponsesServing = request.app.state.responses
    priority = await admit(request, body.model, x_multai_priority, body.priority)
    stream = await unless_disconnected(request, serving.open(body, priority, request.state.request_id))
    response_id = new_response_id()
    if body.stream:
        return StreamingResponse(serving.events(body, stream, response_id), media_type="text/event-stream")
    return await unless_disconnected(request, serving.complete(body, stream, response_id))
