"""Schemathesis hooks for test_fuzz_openapi.py (loaded through SCHEMATHESIS_HOOKS).

Generated model names never exist, so every request would stop at the 404; these hooks name an installed
model of the right kind in most bodies, so that the rest of the generated body reaches the services.
"""

import ast
import threading
import zlib
from typing import Any

import schemathesis

# CPython 3.11 keeps ast.parse's recursion depth in interpreter-wide state, so two of schemathesis' workers
# describing a hypothesis filter at once can crash the run with "SystemError: AST constructor recursion
# depth mismatch" (python/cpython#106905; one full run here). The parses take turns.
_parse_lock = threading.Lock()
_parse = ast.parse


def _parse_one_at_a_time(*args: Any, **kwargs: Any) -> Any:
    with _parse_lock:
        return _parse(*args, **kwargs)


ast.parse = _parse_one_at_a_time

# The installed model each route's requests name, keyed by path.
MODEL_OF_ROUTE = {
    "/v1/chat/completions": "smollm2-135m-instruct",
    "/v1/completions": "smollm2-135m-instruct",
    "/v1/responses": "smollm2-135m-instruct",
    "/v1/embeddings": "text-embedding-3-small",
    "/v1/audio/transcriptions": "whisper-1",
    "/v1/audio/translations": "whisper-1",
    "/v1/audio/speech": "tts-1",
    "/v1/vision": "llava-tiny-random",
    "/v1/images/generations": "dall-e-2",
}
# One body in this many keeps its generated model name, so the 404 stays in the run too.
KEEP_GENERATED_NAME_EVERY = 8


@schemathesis.hook
def map_body(context: schemathesis.HookContext, body: Any) -> Any:
    operation = context.operation
    model = MODEL_OF_ROUTE.get(operation.path) if operation is not None else None
    if model is None or not isinstance(body, dict) or "model" not in body:
        return body
    # A checksum rather than hash(): the same generated body always gets the same treatment.
    if zlib.crc32(repr(sorted(body.items(), key=str)).encode()) % KEEP_GENERATED_NAME_EVERY:
        body["model"] = model
    return body
