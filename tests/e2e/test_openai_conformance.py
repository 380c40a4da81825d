"""The objects the bridge returns have the fields and types of OpenAI's API reference: no null where OpenAI
leaves a field out, required fields present. Checked on the raw JSON (what a strict client sees) and with
the openai SDK's own types and helpers."""

import base64
import json
from typing import Any

import httpx
import openai
from openai.types import Completion, ImagesResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.e2e.mesh import Mesh

MODEL = "smollm2-135m-instruct"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
FORCED_WEATHER = {"type": "function", "function": {"name": "get_weather"}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris right now?"}]
HELLO = [{"role": "user", "content": "Say hello."}]


def nulls_in(value: Any, path: str = "") -> list[str]:
    """The paths of every null inside a JSON value."""
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in nulls_in(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in nulls_in(item, f"{path}[{i}]")]
    return []


def sse_chunks(mesh: Mesh, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON of every event of a streamed response, as sent."""
    with httpx.stream(
        "POST", f"{mesh.base_url}{path}", json={**body, "stream": True}, timeout=120
    ) as response:
        assert response.status_code == 200, response.read()
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def post(mesh: Mesh, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{mesh.base_url}{path}", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_streamed_tool_call_deltas_carry_no_nulls(mesh: Mesh) -> None:
    chunks = sse_chunks(
        mesh,
        "/chat/completions",
        {"model": MODEL, "messages": ASK_WEATHER, "tools": [WEATHER_TOOL], "tool_choice": FORCED_WEATHER},
    )
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert chunk["system_fingerprint"].startswith("fp_")
        assert "usage" not in chunk  # OpenAI sends it only with include_usage
        for choice in chunk["choices"]:
            assert not nulls_in(choice["delta"]), choice["delta"]
    pieces = [
        c for chunk in chunks for choice in chunk["choices"] for c in choice["delta"].get("tool_calls", [])
    ]
    assert len(pieces) > 2
    first, *rest = pieces
    assert first["id"].startswith("call_") and first["type"] == "function"
    assert first["function"]["name"] == "get_weather"
    for piece in rest:
        assert set(piece) == {"index", "function"}, piece
        assert set(piece["function"]) == {"arguments"}, piece
    # The last chunk of the choice says why it ended, with an empty delta.
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }


def test_the_sdk_stream_helper_reassembles_a_tool_call(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model=MODEL,
        messages=ASK_WEATHER,  # type: ignore[arg-type]
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice=FORCED_WEATHER,  # type: ignore[arg-type]
        max_tokens=60,
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.type == "function" and call.function.name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(json.loads(call.function.arguments)["city"], str)  # type: ignore[union-attr]
    assert final.system_fingerprint and final.system_fingerprint.startswith("fp_")


def test_a_whole_chat_completion_has_exactly_openais_message_fields(mesh: Mesh) -> None:
    answer = post(mesh, "/chat/completions", {"model": MODEL, "messages": HELLO, "max_tokens": 8})
    ChatCompletion.model_validate(answer)
    message = answer["choices"][0]["message"]
    assert set(message) == {"role", "content", "refusal"}, message
    assert message["refusal"] is None and isinstance(message["content"], str)
    assert set(answer) == {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
    assert answer["system_fingerprint"].startswith("fp_")

    called = post(
        mesh,
        "/chat/completions",
        {"model": MODEL, "messages": ASK_WEATHER, "tools": [WEATHER_TOOL], "tool_choice": FORCED_WEATHER},
    )["choices"][0]["message"]
    assert set(called) == {"role", "content", "refusal", "tool_calls"}
    assert called["content"] is None and called["tool_calls"][0]["type"] == "function"


def test_system_fingerprint_names_the_model_and_stays_put(mesh: Mesh) -> None:
    def fingerprint(model: str) -> str:
        answer = post(mesh, "/chat/completions", {"model": model, "messages": HELLO, "max_tokens": 1})
        value: str = answer["system_fingerprint"]
        return value

    smollm = fingerprint(MODEL)
    assert fingerprint(MODEL) == smollm
    assert fingerprint("gemma-3-270m") != smollm
    streamed = sse_chunks(mesh, "/chat/completions", {"model": MODEL, "messages": HELLO, "max_tokens": 2})
    assert {c["system_fingerprint"] for c in streamed} == {smollm}


def test_completions_whole_and_streamed(mesh: Mesh) -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 5}
    whole = post(mesh, "/completions", body)
    Completion.model_validate(whole)
    assert whole["system_fingerprint"].startswith("fp_")
    assert set(whole["choices"][0]) == {"index", "text", "logprobs", "finish_reason"}
    chunks = sse_chunks(mesh, "/completions", {**body, "stream_options": {"include_usage": True}})
    for chunk in chunks[:-1]:
        # OpenAI's own chunks say finish_reason null until the last, which the SDK's type does not allow.
        assert set(chunk["choices"][0]) == {"index", "text", "logprobs", "finish_reason"}
        assert "usage" not in chunk and chunk["system_fingerprint"] == whole["system_fingerprint"]
    Completion.model_validate(chunks[-2])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


def test_gpt_image_1_answers_in_base64_and_every_image_has_its_prompt(
    client: openai.OpenAI, mesh: Mesh
) -> None:
    prompt = "a red square"
    image = client.images.generate(model="gpt-image-1", prompt=prompt, size="64x64")
    assert image.data is not None and image.data[0].b64_json is not None
    assert base64.b64decode(image.data[0].b64_json).startswith(b"\x89PNG")
    assert image.data[0].url is None

    raw = post(mesh, "/images/generations", {"model": "dall-e-3", "prompt": prompt, "size": "64x64"})
    ImagesResponse.model_validate(raw)
    assert not nulls_in(raw)
    assert set(raw["data"][0]) == {"url", "revised_prompt"}
    assert raw["data"][0]["revised_prompt"] == prompt
    # OpenAI's schema allows only gpt-image-1's sizes here; 64x64 is left out rather than sent.
    assert "size" not in raw


def test_vision_replies_carry_a_fingerprint(mesh: Mesh) -> None:
    answer = post(
        mesh, "/chat/completions", {"model": "llava-tiny-random", "messages": HELLO, "max_tokens": 3}
    )
    ChatCompletion.model_validate(answer)
    assert answer["system_fingerprint"].startswith("fp_")
    assert set(answer["choices"][0]["message"]) == {"role", "content", "refusal"}
