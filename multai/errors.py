"""Typed domain errors raised by servicers and turned into gRPC status by one interceptor.

The error code and parameter travel as trailing metadata, from which the REST bridge builds OpenAI's
error JSON.
"""

from collections.abc import Iterable

import grpc

ERROR_CODE_KEY = "multai-error-code"
ERROR_PARAM_KEY = "multai-error-param"

# The one mapping of a gRPC status to the HTTP status and OpenAI `error.type` that a caller sees: the REST
# bridge answers with it and the gRPC client library (`multai.client`) raises the matching exception.
HTTP_ERRORS: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "invalid_request_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "invalid_request_error"),
    grpc.StatusCode.ABORTED: (409, "server_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.CANCELLED: (499, "server_error"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "server_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "server_error"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
}
UNMAPPED_HTTP_ERROR = (500, "server_error")


def http_error(status: grpc.StatusCode) -> tuple[int, str]:
    """The HTTP status and OpenAI `error.type` of a failed call's gRPC status."""
    return HTTP_ERRORS.get(status, UNMAPPED_HTTP_ERROR)


def error_code_and_param(
    trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
) -> tuple[str | None, str | None]:
    """The error code and parameter a service attached to a failed call (see MultaiError)."""
    values = {
        key: value.decode() if isinstance(value, bytes) else value for key, value in trailing_metadata or ()
    }
    return values.get(ERROR_CODE_KEY), values.get(ERROR_PARAM_KEY)


class MultaiError(Exception):
    """A failure with a gRPC status, an OpenAI error code and the request parameter at fault."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata pairs that carry code and param across gRPC."""
        pairs = [(ERROR_CODE_KEY, self.code)]
        if self.param:
            pairs.append((ERROR_PARAM_KEY, self.param))
        return tuple(pairs)


class InvalidRequestError(MultaiError):
    """The caller sent something the service cannot accept."""

    status = grpc.StatusCode.INVALID_ARGUMENT
    code = "invalid_request"


class ModelNotFoundError(MultaiError):
    """No installed model has this id or alias."""

    status = grpc.StatusCode.NOT_FOUND
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist", param="model")


class ResourceExhaustedError(MultaiError):
    """The queue is full or the model does not fit in any memory."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    code = "resource_exhausted"


class ServiceUnavailableError(MultaiError):
    """A dependency (scheduler, engine) cannot serve now; retrying later may work."""

    status = grpc.StatusCode.UNAVAILABLE
    code = "service_unavailable"
