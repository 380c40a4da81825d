"""Bounded work per request: out-of-range numbers, oversized bodies, prompts and schemas, and Host checks
get their 4xx quickly, and the mesh keeps serving."""

import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from multai.chat.v1 import chat_pb2, chat_pb2_grpc
from multai.errors import error_code_and_param
from multai.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from tests.e2e.mesh import Mesh

CHAT_MODEL = "smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Say hello."}]
BEYOND_INT32 = 2**31
BEYOND_INT64 = 36893488147419103232


def post(mesh: Mesh, path: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{mesh.base_url}{path}", json=body, timeout=120, **kwargs)  # type: ignore[arg-type]


def assert_ready(mesh: Mesh) -> None:
    response = httpx.get(mesh.base_url.removesuffix("/v1") + "/readyz", timeout=10)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/chat/completions", {"model": CHAT_MODEL, "messages": HELLO, "seed": BEYOND_INT64}, "seed"),
        (
            "/chat/completions",
            {"model": CHAT_MODEL, "messages": HELLO, "max_tokens": BEYOND_INT32},
            "max_tokens",
        ),
        ("/chat/completions", {"model": CHAT_MODEL, "messages": HELLO, "top_k": BEYOND_INT32}, "top_k"),
        (
            "/chat/completions",
            {"model": CHAT_MODEL, "messages": HELLO, "top_logprobs": BEYOND_INT32},
            "top_logprobs",
        ),
        (
            "/chat/completions",
            {"model": CHAT_MODEL, "messages": HELLO, "n_gpu_layers": BEYOND_INT32},
            "n_gpu_layers",
        ),
        ("/completions", {"model": CHAT_MODEL, "prompt": "Hi", "seed": BEYOND_INT64}, "seed"),
        ("/completions", {"model": CHAT_MODEL, "prompt": "Hi", "n_gpu_layers": BEYOND_INT32}, "n_gpu_layers"),
        (
            "/embeddings",
            {"model": "text-embedding-3-small", "input": "a", "dimensions": BEYOND_INT32},
            "dimensions",
        ),
        ("/embeddings", {"model": "text-embedding-3-small", "input": [BEYOND_INT32]}, "input"),
        ("/images/generations", {"prompt": "a cat", "n": BEYOND_INT32}, "n"),
        (
            "/images/generations",
            {"prompt": "a cat", "num_inference_steps": BEYOND_INT32},
            "num_inference_steps",
        ),
        ("/images/generations", {"prompt": "a cat", "seed": BEYOND_INT64}, "seed"),
        (
            "/responses",
            {"model": CHAT_MODEL, "input": "Hi", "max_output_tokens": BEYOND_INT32},
            "max_output_tokens",
        ),
        (
            "/vision",
            {"model": "llava-tiny-random", "prompt": "?", "image": "aGk=", "seed": BEYOND_INT64},
            "seed",
        ),
    ],
)
def test_integers_beyond_protobuf_are_400_naming_the_param(
    mesh: Mesh, path: str, body: dict[str, object], param: str
) -> None:
    response = post(mesh, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert str(error["param"]).split(".")[0] == param


def test_max_tokens_beyond_the_context_is_400_not_clamped(mesh: Mesh) -> None:
    response = post(mesh, "/chat/completions", {"model": CHAT_MODEL, "messages": HELLO, "max_tokens": 10**9})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "max_tokens"


def test_a_body_over_the_limit_is_413_from_its_length(mesh: Mesh) -> None:
    prompt = "x" * (50 * 1024 * 1024)
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": prompt}]}
    response = post(mesh, "/chat/completions", body)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "retry-after" not in response.headers
    assert_ready(mesh)


def test_a_chunked_body_is_cut_off_at_the_limit(mesh: Mesh) -> None:
    """Without Content-Length, the bridge stops reading once the limit is passed and answers 413."""
    sent = 0
    chunk = b"x" * (1024 * 1024)

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "'
        for _ in range(200):
            sent += len(chunk)
            yield chunk
        yield b'"}]}'

    try:
        response = httpx.post(
            f"{mesh.base_url}/chat/completions",
            content=body(),
            headers={"content-type": "application/json"},
            timeout=120,
        )
    except httpx.HTTPError:
        # The server may close the connection while the client is still sending: that is the point.
        assert sent < 200 * len(chunk)
    else:
        assert response.status_code == 413, response.text
    assert_ready(mesh)


def test_a_huge_enum_is_refused_in_under_a_second(mesh: Mesh) -> None:
    schema = {"type": "object", "properties": {"x": {"enum": [f"v{i}" for i in range(100_000)]}}}
    body = {
        "model": CHAT_MODEL,
        "messages": HELLO,
        "response_format": {"type": "json_schema", "json_schema": {"name": "big", "schema": schema}},
    }
    started = time.monotonic()
    response = post(mesh, "/chat/completions", body)
    assert time.monotonic() - started < 1.0
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "response_format"
    assert_ready(mesh)


def test_a_prompt_far_past_the_context_is_refused_before_tokenising(mesh: Mesh) -> None:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "word " * 2_000_000}]}
    started = time.monotonic()
    response = post(mesh, "/chat/completions", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "messages"
    # Tokenising ten million characters takes seconds on these cores; the character bound answers first.
    assert time.monotonic() - started < 2.0


async def total_grants(mesh: Mesh) -> int:
    async with mesh.channels.aio_channel(mesh.scheduler_address) as channel:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        status: scheduler_pb2.GetStatusResponse = await stub.GetStatus(
            scheduler_pb2.GetStatusRequest(), timeout=30
        )
    return status.total_grants


async def test_an_image_request_over_the_work_budget_is_refused_before_any_lease(mesh: Mesh) -> None:
    grants = await total_grants(mesh)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=120) as client:
        body = {"prompt": "a cat", "size": "2048x2048", "n": 10}
        response = await client.post(f"{mesh.base_url}/images/generations", json=body)
    assert response.status_code == 400, response.text
    assert "megapixel-steps" in response.json()["error"]["message"]
    assert time.monotonic() - started < 2.0
    assert await total_grants(mesh) == grants
    assert_ready(mesh)


@pytest.mark.parametrize(
    ("engine", "sampling", "param"),
    [
        (chat_pb2.EngineOptions(n_threads=100_000), chat_pb2.SamplingParams(), "n_threads"),
        (chat_pb2.EngineOptions(n_gpu_layers=-7), chat_pb2.SamplingParams(), "n_gpu_layers"),
        (chat_pb2.EngineOptions(), chat_pb2.SamplingParams(temperature=50), "temperature"),
        (chat_pb2.EngineOptions(), chat_pb2.SamplingParams(max_tokens=-3), "max_tokens"),
    ],
)
async def test_a_raw_grpc_caller_meets_the_same_bounds(
    mesh: Mesh, engine: chat_pb2.EngineOptions, sampling: chat_pb2.SamplingParams, param: str
) -> None:
    request = chat_pb2.CreateCompletionRequest(
        model=CHAT_MODEL, prompt="Hi", engine=engine, sampling=sampling
    )
    async with mesh.channels.aio_channel(mesh.chat_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            async for _ in chat_pb2_grpc.ChatServiceStub(channel).CreateCompletion(request, timeout=60):
                pass
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_and_param(failed.value.trailing_metadata())[1] == param


def test_an_unknown_host_header_is_refused(mesh: Mesh) -> None:
    rebound = httpx.get(f"{mesh.base_url}/models", headers={"host": "attacker.example"}, timeout=30)
    assert rebound.status_code == 400
    assert rebound.json()["error"]["code"] == "host_not_allowed"
    local = httpx.get(f"{mesh.base_url}/models", headers={"host": "localhost:8080"}, timeout=30)
    assert local.status_code == 200


def test_cors_is_off_by_default(mesh: Mesh) -> None:
    preflight = httpx.options(
        f"{mesh.base_url}/chat/completions",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        timeout=30,
    )
    assert "access-control-allow-origin" not in preflight.headers
