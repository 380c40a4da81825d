"""The client's exceptions, named like the `openai` SDK's so that `except openai.X` ports to `except X`.

A failed call's gRPC status goes through the mesh's one status table (`multai.errors.http_error`) to the
HTTP status the REST bridge would answer, and that HTTP status picks the class as the SDK picks it. The
error code and parameter come from the `multai-error-code` / `multai-error-param` trailing metadata.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from multai.errors import error_code_and_param, http_error


class MultAIError(Exception):
    """Base of every error this client raises (the SDK's `OpenAIError`)."""


class APIError(MultAIError):
    """A request failed; `code`, `param` and `type` are the fields of OpenAI's error object."""

    type: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        grpc_code: grpc.StatusCode | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        if type is not None:
            self.type = type
        self.grpc_code = grpc_code
        self.request_id = request_id

    @property
    def body(self) -> dict[str, str | None]:
        """OpenAI's error object, as the SDK's `error.body` holds it."""
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}


class APIConnectionError(APIError):
    """The service could not be reached (no process at the address, connection dropped)."""


class APITimeoutError(APIConnectionError):
    """The call's deadline (`timeout=`) passed before the service answered."""

    type = "timeout"


class APIStatusError(APIError):
    """The service answered with an error; `status_code` is the HTTP status the REST bridge would send."""

    status_code: int = 500

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        grpc_code: grpc.StatusCode | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(
            message, code=code, param=param, type=type, grpc_code=grpc_code, request_id=request_id
        )
        if status_code is not None:
            self.status_code = status_code


class BadRequestError(APIStatusError):
    """The request is invalid (HTTP 400)."""

    status_code = 400
    type = "invalid_request_error"


class AuthenticationError(APIStatusError):
    """The caller is not authenticated, e.g. by an edge proxy (HTTP 401)."""

    status_code = 401
    type = "authentication_error"


class PermissionDeniedError(APIStatusError):
    """The caller may not do this (HTTP 403)."""

    status_code = 403
    type = "permission_error"


class NotFoundError(APIStatusError):
    """No model (or other object) has the given name (HTTP 404)."""

    status_code = 404
    type = "invalid_request_error"


class ConflictError(APIStatusError):
    """The request conflicts with the service's state (HTTP 409)."""

    status_code = 409


class UnprocessableEntityError(APIStatusError):
    """The request is well formed but cannot be processed (HTTP 422)."""

    status_code = 422


class RateLimitError(APIStatusError):
    """The scheduler's queue is full or the model fits in no memory now; retrying later may work."""

    status_code = 429
    type = "rate_limit_error"


class InternalServerError(APIStatusError):
    """The service failed, or cannot serve now (any HTTP 5xx)."""

    status_code = 500
    type = "server_error"


# The SDK's choice of class by HTTP status; other statuses below 500 raise APIStatusError itself.
STATUS_CODE_ERRORS: dict[int, type[APIStatusError]] = {
    error.status_code: error
    for error in (
        BadRequestError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        UnprocessableEntityError,
        RateLimitError,
    )
}
SERVER_ERROR_STATUS = 500


# Sync calls fail with a grpc.RpcError that is also a grpc.Call; grpc.aio fails with AioRpcError.
FailedCall = grpc.Call | grpc.aio.AioRpcError


def from_rpc_error(exc: grpc.RpcError, request_id: str | None = None) -> APIError:
    """The client exception for a failed call (sync `grpc.RpcError` or `grpc.aio.AioRpcError`)."""
    if not isinstance(exc, FailedCall):
        return APIConnectionError(str(exc) or "the gRPC call failed", request_id=request_id)
    status = exc.code()
    code, param = error_code_and_param(exc.trailing_metadata())
    message = exc.details() or status.name.lower()
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return APITimeoutError(
            f"Request timed out ({message})", code=code, param=param, grpc_code=status, request_id=request_id
        )
    if status == grpc.StatusCode.UNAVAILABLE and code is None:
        # The services attach an error code to everything they abort with: without one, gRPC itself
        # could not reach the address.
        return APIConnectionError(message, param=param, grpc_code=status, request_id=request_id)
    http_status, error_type = http_error(status)
    error_class = STATUS_CODE_ERRORS.get(
        http_status, InternalServerError if http_status >= SERVER_ERROR_STATUS else APIStatusError
    )
    return error_class(
        message,
        status_code=http_status,
        type=error_type,
        code=code,
        param=param,
        grpc_code=status,
        request_id=request_id,
    )


@contextmanager
def rpc_errors(request_id: str | None = None) -> Iterator[None]:
    """Raises the client exception for a gRPC call that fails inside the block."""
    try:
        yield
    except grpc.RpcError as exc:
        raise from_rpc_error(exc, request_id) from exc
