"""Limits are checked once, in the services: a gRPC caller meets the same ones as a REST caller."""

import httpx
import pytest

from multai.client import BadRequestError, MultAI
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
        ("/audio/speech", {"model": "tts-1", "voice": "alloy", "input": "Hi", "speed": 5}),
        ("/audio/speech", {"model": "tts-1", "voice": "alloy", "input": " "}),
    ],
)
def test_rest_callers_get_the_services_400(mesh: Mesh, path: str, body: dict[str, object]) -> None:
    error = rest_error(mesh, path, body)
    assert error["type"] == "invalid_request_error"
    assert error["param"] in {"stop", "speed", "input"}


def test_grpc_callers_get_the_same_checks(mesh: Mesh) -> None:
    with MultAI(chat=mesh.chat_address, audio=mesh.audio_address, timeout=60) as client:
        with pytest.raises(BadRequestError) as stops:
            client.chat.completions.create(model="smollm2-135m-instruct", messages=HELLO, stop=FIVE_STOPS)
        assert stops.value.param == "stop"
        with pytest.raises(BadRequestError) as speed:
            client.audio.speech.create(model="tts-1", voice="alloy", input="Hi", speed=5)
        assert speed.value.param == "speed"
