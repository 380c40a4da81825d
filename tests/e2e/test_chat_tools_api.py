"""Tools, n, seed, logprobs, logit_bias and user on /v1/chat/completions, through the official SDK."""

import json
from pathlib import Path
from typing import Any

import jsonschema
import llama_cpp
import openai
import pytest
from openai.types.chat.chat_completion import Choice

MODEL = "smollm2-135m-instruct"
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_PARAMETERS = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 20}},
    "required": ["timezone"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather of a city.",
            "parameters": WEATHER_PARAMETERS,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The time in a timezone.",
            "parameters": TIME_PARAMETERS,
        },
    },
]
PARAMETERS_BY_NAME = {"get_weather": WEATHER_PARAMETERS, "get_time": TIME_PARAMETERS}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris right now?"}]
ASK_STORY = [{"role": "user", "content": "Tell me a story about a cat."}]


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    error: dict[str, Any] = exc.response.json()["error"]
    return error


def assert_valid_calls(calls: list[tuple[str, str, str]]) -> None:
    """Each (id, name, arguments) names a declared function with arguments that match its parameters."""
    assert calls
    for call_id, name, arguments in calls:
        assert call_id.startswith("call_")
        jsonschema.validate(json.loads(arguments), PARAMETERS_BY_NAME[name])


@pytest.fixture(scope="module")
def weather_choice(client: openai.OpenAI) -> Choice:
    """A reply forced to call get_weather, shared by the tests that read it."""
    return client.chat.completions.create(
        model=MODEL,
        messages=ASK_WEATHER,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=60,
    ).choices[0]


def test_named_tool_choice_returns_a_call_of_that_function(weather_choice: Choice) -> None:
    assert weather_choice.finish_reason == "tool_calls"
    assert weather_choice.message.content is None
    calls = weather_choice.message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == ["get_weather"]
    assert all(c.type == "function" for c in calls)
    assert_valid_calls([(c.id, c.function.name, c.function.arguments) for c in calls])


def test_required_tool_choice_streamed_reassembles_to_the_same_calls(client: openai.OpenAI) -> None:
    request: dict[str, Any] = dict(
        model=MODEL, messages=ASK_WEATHER, tools=TOOLS, tool_choice="required", seed=5, max_tokens=80
    )
    whole = client.chat.completions.create(**request).choices[0]
    assert whole.finish_reason == "tool_calls" and whole.message.tool_calls
    whole_calls = [(c.id, c.function.name, c.function.arguments) for c in whole.message.tool_calls]
    assert_valid_calls(whole_calls)

    calls: dict[int, list[str]] = {}
    finish_reasons = []
    for chunk in client.chat.completions.create(**request, stream=True):
        delta = chunk.choices[0].delta
        assert not delta.content
        for piece in delta.tool_calls or []:
            call = calls.setdefault(piece.index, ["", "", ""])
            if piece.id:
                assert call[0] == "" and piece.type == "function", "id and type come once, first"
                call[0] = piece.id
            if piece.function and piece.function.name:
                call[1] = piece.function.name
            if piece.function and piece.function.arguments:
                call[2] += piece.function.arguments
        finish_reasons.append(chunk.choices[0].finish_reason)
    streamed_calls = [(c[0], c[1], c[2]) for _, c in sorted(calls.items())]
    assert_valid_calls(streamed_calls)
    assert finish_reasons[-1] == "tool_calls"
    # Ids are fresh per response; names and arguments repeat with the seed.
    assert [c[1:] for c in streamed_calls] == [c[1:] for c in whole_calls]


def test_conversation_continues_after_a_tool_result(client: openai.OpenAI, weather_choice: Choice) -> None:
    assert weather_choice.message.tool_calls
    call = weather_choice.message.tool_calls[0]
    conversation = [
        *ASK_WEATHER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": json.dumps({"temperature": 18, "sky": "cloudy"}),
        },
    ]
    reply = client.chat.completions.create(
        model=MODEL, messages=conversation, tools=TOOLS, temperature=0, max_tokens=30
    ).choices[0]
    assert reply.message.role == "assistant"
    assert reply.message.content or reply.message.tool_calls
    assert reply.finish_reason in {"stop", "length", "tool_calls"}

    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model=MODEL,
            messages=[*conversation[:1], {**conversation[2], "tool_call_id": "call_unknown"}],
            max_tokens=5,
        )
    assert error_of(error.value)["param"] == "messages[1].tool_call_id"


def test_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    choice = client.chat.completions.create(
        model=MODEL, messages=ASK_WEATHER, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=20
    ).choices[0]
    assert choice.message.content and choice.message.tool_calls is None
    assert choice.finish_reason in {"stop", "length"}


def test_n_choices_differ_and_repeat_with_a_seed(client: openai.OpenAI) -> None:
    request: dict[str, Any] = dict(
        model=MODEL, messages=ASK_STORY, n=3, seed=11, temperature=1.0, max_tokens=12
    )
    first = client.chat.completions.create(**request)
    assert [c.index for c in first.choices] == [0, 1, 2]
    texts = [c.message.content for c in first.choices]
    assert len(set(texts)) > 1, "each choice draws with its own seed"
    # Usage counts the tokens of every choice.
    assert 12 < first.usage.completion_tokens <= 3 * 12
    again = client.chat.completions.create(**request)
    assert [c.message.content for c in again.choices] == texts


def test_streamed_choices_carry_their_index(client: openai.OpenAI) -> None:
    request: dict[str, Any] = dict(
        model=MODEL, messages=ASK_STORY, n=2, seed=3, temperature=1.0, max_tokens=8
    )
    whole = client.chat.completions.create(**request)
    texts: dict[int, str] = {}
    finished: dict[int, str] = {}
    usage = None
    for chunk in client.chat.completions.create(
        **request, stream=True, stream_options={"include_usage": True}
    ):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert finished == {c.index: c.finish_reason for c in whole.choices}
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_same_seed_gives_the_same_reply(client: openai.OpenAI) -> None:
    replies = [
        client.chat.completions.create(
            model=MODEL, messages=ASK_STORY, seed=1234, temperature=1.0, max_tokens=10
        )
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert replies[0] and replies[0] == replies[1]


def test_logprobs_cover_the_reply_with_sorted_alternatives(client: openai.OpenAI) -> None:
    # A seed makes the reply independent of what earlier requests left in the engine's cache.
    request: dict[str, Any] = dict(model=MODEL, messages=ASK_WEATHER, temperature=0, seed=1, max_tokens=12)
    choice = client.chat.completions.create(**request, logprobs=True, top_logprobs=3).choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    entries = choice.logprobs.content
    assert "".join(e.token for e in entries) == choice.message.content
    for entry in entries:
        assert entry.logprob <= 0 and entry.bytes == list(entry.token.encode())
        alternatives = [t.logprob for t in entry.top_logprobs]
        assert len(alternatives) == 3 and alternatives == sorted(alternatives, reverse=True)
        # Greedy decoding takes the likeliest token.
        assert entry.top_logprobs[0].token == entry.token

    plain = client.chat.completions.create(**request)
    assert plain.choices[0].logprobs is None
    assert plain.choices[0].message.content == choice.message.content


def test_logit_bias_bans_a_token(client: openai.OpenAI, models_dir: Path) -> None:
    request: dict[str, Any] = dict(
        model=MODEL, messages=ASK_WEATHER, temperature=0, seed=1, max_tokens=10, logprobs=True, top_logprobs=2
    )
    first = client.chat.completions.create(**request).choices[0]
    assert first.logprobs is not None and first.logprobs.content
    banned_text = first.logprobs.content[0].token
    vocabulary = llama_cpp.Llama(
        model_path=str(models_dir / MODEL / "model.gguf"), vocab_only=True, verbose=False
    )
    banned_ids = vocabulary.tokenize(banned_text.encode(), add_bos=False, special=True)
    assert len(banned_ids) == 1, "the greedy first token is one token of the vocabulary"

    biased = client.chat.completions.create(**request, logit_bias={str(banned_ids[0]): -100}).choices[0]
    assert biased.logprobs is not None and biased.logprobs.content
    assert biased.message.content != first.message.content
    assert banned_text not in [e.token for e in biased.logprobs.content]
    assert banned_text not in [t.token for t in biased.logprobs.content[0].top_logprobs]


def test_user_is_accepted(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ASK_STORY, user="user-4711", temperature=0, max_tokens=5
    )
    assert response.choices[0].message.content


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_stock"}}},
            "tool_choice",
        ),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"10000000": -100}}, "logit_bias"),
        ({"n": 9}, "n"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]},
            "tools[0].function.parameters",
        ),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=ASK_STORY, max_tokens=5, **extra)
    assert error_of(error.value)["param"] == param
