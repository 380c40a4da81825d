"""OpenAI's error JSON for every route, from the one gRPC status mapping in `multai.errors`."""

import grpc
from fastapi.responses import JSONResponse

from multai.errors import error_code_and_param, http_error

DEFAULT_RETRY_AFTER_SECONDS = "1"


class OpenAIError(Exception):
    """An error to send as OpenAI's {"error": {...}} body with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, dict[str, str | None]]:
        """OpenAI's error object."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """The JSON response, with Retry-After on 429 and 503."""
        headers = {"Retry-After": self.retry_after} if self.retry_after else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def from_rpc_error(exc: grpc.aio.AioRpcError) -> OpenAIError:
    """Translates a failed gRPC call, keeping the code and param the service attached."""
    code = exc.code()
    status, error_type = http_error(code)
    error_code, param = error_code_and_param(exc.trailing_metadata())
    retry_after = DEFAULT_RETRY_AFTER_SECONDS if status in (429, 503) else None
    message = exc.details() or code.name.lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"The model service is unavailable ({message}); retry shortly"
    return OpenAIError(
        status,
        message,
        type=error_type,
        param=param,
        code=error_code,
        retry_after=retry_after,
    )


def invalid_request(message: str, param: str | None = None) -> OpenAIError:
    """A 400 for a request the bridge itself rejects."""
    return OpenAIError(400, message, param=param, code="invalid_request")
