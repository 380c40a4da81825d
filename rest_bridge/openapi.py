"""/openapi.json as the bridge really answers: each route's error statuses with OpenAI's error schema, the
media types of its successful answers, and the bearer scheme.

FastAPI documents only 200 and 422; this bridge never answers 422 (validation failures are OpenAI's 400)
and answers the statuses below, which `tests/e2e/test_fuzz_openapi.py` holds it to.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from multai.errors import HTTP_ERRORS
from multai.openai.audio import SPEECH_CONTENT_TYPES

ERROR_SCHEMA_NAME = "ErrorResponse"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "OpenAI's error object.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "code": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
        }
    },
}
STATUS_MEANINGS = {
    400: "Invalid request, or a Host header this server does not answer to.",
    401: "No API key, or a wrong one (once keys exist).",
    403: "A priority above the API key's tier.",
    404: "No such model (or one the API key may not use), file or batch.",
    409: "The request conflicted with the state (a model being replaced, a batch that has ended).",
    413: "The body is larger than the server's limit.",
    429: "Over the API key's rate limits, or the model's queue is full; see Retry-After.",
    500: "An error inside the mesh.",
    501: "Not implemented by the service.",
    502: "A service answered out of protocol.",
    503: "The service behind the route is unavailable; see Retry-After.",
    504: "The request ran past its deadline.",
}
# Every route: the Host check. /v1 routes: keys and their rate limits.
ANY_ROUTE = {400}
API_ROUTE = ANY_ROUTE | {401, 429}
# Routes that call a model service: what the one gRPC-to-HTTP table (multai.errors) can produce, the
# bridge's own 413, 502 and 403, and 500 for anything unmapped.
INFERENCE_ROUTE = (
    API_ROUTE
    | {status for status, _ in HTTP_ERRORS.values() if status in STATUS_MEANINGS}
    | {403, 413, 500, 502}
)
ROUTE_STATUSES: dict[str, set[int]] = {
    "/v1/models": API_ROUTE,
    "/v1/models/{model}": API_ROUTE | {404},
    "/v1/images/files/{name}": ANY_ROUTE | {404},
    "/v1/files": API_ROUTE | {413},
    "/v1/files/{file_id}": API_ROUTE | {404},
    "/v1/files/{file_id}/content": API_ROUTE | {404},
    "/v1/batches": API_ROUTE | {403, 404},
    "/v1/batches/{batch_id}": API_ROUTE | {404},
    "/v1/batches/{batch_id}/cancel": API_ROUTE | {404, 409},
    "/healthz": ANY_ROUTE,
    "/readyz": ANY_ROUTE | {503},
    "/metrics": ANY_ROUTE,
}
SSE = {
    "text/event-stream": {"schema": {"type": "string", "description": "Server-sent events (stream: true)."}}
}
TEXT = {"schema": {"type": "string"}}
# Media types of successful answers beside (or instead of) FastAPI's JSON.
SUCCESS_CONTENT: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": SSE,
    "/v1/completions": SSE,
    "/v1/responses": SSE,
    "/v1/vision": SSE,
    "/v1/audio/transcriptions": {"text/plain": TEXT, "text/vtt": TEXT},
    "/v1/audio/translations": {"text/plain": TEXT, "text/vtt": TEXT},
    "/v1/audio/speech": {
        media: {"schema": {"type": "string", "format": "binary"}} for media in SPEECH_CONTENT_TYPES.values()
    },
    "/v1/images/files/{name}": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    "/v1/files/{file_id}/content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
    },
    "/metrics": {"text/plain": TEXT},
}
# The answers that are not JSON at all.
NOT_JSON = {"/v1/audio/speech", "/v1/images/files/{name}", "/v1/files/{file_id}/content", "/metrics"}


def _error_responses(statuses: set[int]) -> dict[str, Any]:
    reference = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}
    return {
        str(status): {
            "description": STATUS_MEANINGS[status],
            "content": {"application/json": {"schema": reference}},
        }
        for status in sorted(statuses)
    }


def truthful_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, corrected as the module docstring says; built once and cached on the app."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})[ERROR_SCHEMA_NAME] = ERROR_SCHEMA
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A key from `multai keys create`; required on /v1 once any key exists.",
        }
    }
    for component in list(components["schemas"]):
        if component in ("HTTPValidationError", "ValidationError"):
            del components["schemas"][component]
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            success = responses.setdefault("200", {"description": "Successful Response"})
            content = success.setdefault("content", {})
            if path in NOT_JSON:
                content.pop("application/json", None)
            content.update(SUCCESS_CONTENT.get(path, {}))
            responses.update(_error_responses(ROUTE_STATUSES.get(path, INFERENCE_ROUTE)))
            if path.startswith("/v1/") and path != "/v1/images/files/{name}":
                operation["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema
