"""POST /v1/images/generations, and GET of the stored images its URLs point to."""

from fastapi import APIRouter, Header, Request
from fastapi.responses import FileResponse

from multai.openai.images import ImageGenerationRequest, ImagesResponse
from rest_bridge.auth import admit
from rest_bridge.errors import OpenAIError
from rest_bridge.routes.disconnect import unless_disconnected
from rest_bridge.serving.images import ImageServing, ImageStore

router = APIRouter()
FILES_PATH = "/v1/images/files"


@router.post("/v1/images/generations", response_model=ImagesResponse, response_model_exclude_none=True)
async def create_image(
    body: ImageGenerationRequest,
    request: Request,
    x_multai_priority: str | None = Header(None, description="Queue level 0, 1 or 2; overrides `priority`."),
) -> ImagesResponse:
    """Creates images from a prompt; URLs stay readable for the store's time to live."""
    serving: ImageServing = request.app.state.images
    public_base_url: str = request.app.state.public_base_url or str(request.base_url).rstrip("/")
    work = serving.generate(
        body,
        await admit(request, body.model, x_multai_priority, body.priority),
        request.state.request_id,
        public_base_url + FILES_PATH,
    )
    return await unless_disconnected(request, work)


@router.get(FILES_PATH + "/{name}", response_class=FileResponse)
async def read_image(name: str, request: Request) -> FileResponse:
    """A stored image, until it expires."""
    store: ImageStore = request.app.state.image_store
    path = store.path_of(name)
    if path is None:
        raise OpenAIError(404, "This image does not exist or has expired", code="image_not_found")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})
