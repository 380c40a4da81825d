"""Limits are checked once, in the services: a gRPC caller meets the same ones as a REST caller."""

import grpc
import httpx
import pytest

from multai.chat.v1 import chat_pb2
from multai.client import BadRequestError, MultAI
from multai.errors import error_code_and_param
from multai.vision.v1 import vision_pb2, vision_pb2_grpc
from tests.e2e.mesh import Mesh

FIVE_STOPS = ["a", "b", "c", "d", "e"]
HELLO = [{"role": "user", "content": "Say hello."}]


def rest_error(mesh: Mesh, path: str, body: dict[str, object]) -> dict[str, object]:
    response = httpx.post(f"{mesh.base_url}{path}", json=body, timeout=60)
    assert response.status_code == 400, response.text
    error: dict[str, object] = response.json()["error"]
    return error


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat/completions", {"model": "smollm2-135m-instruct", "messages": HELLO, "stop": FIVE_STOPS}),
        ("/completions", {"model": "smollm2-135m-instruct", "prompt": "Hi", "stop": FIVE_STOPS}),
        ("/chat/completions", {"model": "llava-tiny-random", "messages": HELLO, "stop": FIVE_STOPS}),
        ("/chat/completions", {"model": "llava-tiny-random", "messages": HELLO, "logit_bias": {"5": 1}}),
        ("/chat/completions", {"model": "llava-tiny-random", "messages": HELLO, "presence_penalty": 1}),
        ("/audio/speech", {"model": "tts-1", "voice": "alloy", "input": "Hi", "speed": 5}),
        ("/audio/speech", {"model": "tts-1", "voice": "alloy", "input": " "}),
    ],
)
def test_rest_callers_get_the_services_400(mesh: Mesh, path: str, body: dict[str, object]) -> None:
    error = rest_error(mesh, path, body)
    assert error["type"] == "invalid_request_error"
    assert error["param"] in {"stop", "speed", "input", "logit_bias", "presence_penalty"}


def test_grpc_callers_get_the_same_checks(mesh: Mesh) -> None:
    with MultAI(
        chat=mesh.chat_address, audio=mesh.audio_address, timeout=60, certs_dir=mesh.certs_dir
    ) as client:
        with pytest.raises(BadRequestError) as stops:
            client.chat.completions.create(model="smollm2-135m-instruct", messages=HELLO, stop=FIVE_STOPS)
        assert stops.value.param == "stop"
        with pytest.raises(BadRequestError) as speed:
            client.audio.speech.create(model="tts-1", voice="alloy", input="Hi", speed=5)
        assert speed.value.param == "speed"
        with pytest.raises(BadRequestError) as temperature:
            client.audio.transcriptions.create(model="whisper-1", file=b"RIFF", temperature=3)
        assert temperature.value.param == "temperature"


@pytest.mark.parametrize(
    ("sampling", "param"),
    [
        (chat_pb2.SamplingParams(stop=FIVE_STOPS), "stop"),
        (chat_pb2.SamplingParams(logit_bias={5: -100.0}), "logit_bias"),
        (chat_pb2.SamplingParams(frequency_penalty=0.5), "frequency_penalty"),
    ],
)
async def test_raw_grpc_vision_callers_get_the_same_checks(
    mesh: Mesh, sampling: chat_pb2.SamplingParams, param: str
) -> None:
    request = vision_pb2.CreateVisionCompletionRequest(
        model="llava-tiny-random",
        messages=[vision_pb2.VisionMessage(role="user", parts=[vision_pb2.ContentPart(text="Hi")])],
        sampling=sampling,
    )
    async with mesh.channels.aio_channel(mesh.vision_address) as channel:
        stub = vision_pb2_grpc.VisionServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            async for _ in stub.CreateVisionCompletion(request, timeout=60):
                pass
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_and_param(failed.value.trailing_metadata())[1] == param
