"""/v1/responses through the official SDK against the real mesh: text, messages, streaming, limits,
structured output and a function-tool round trip."""

import json

import jsonschema
import openai
import pytest
from pydantic import BaseModel

MODEL = "smollm2-135m-instruct"
QUESTION = "What is the capital of France? Answer in one sentence."
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather of a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def test_string_input_answers(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input=QUESTION, temperature=0)
    assert response.id.startswith("resp_") and response.status == "completed"
    assert "Paris" in response.output_text
    assert response.model == MODEL
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_messages_with_instructions_equal_the_chat_completion(client: openai.OpenAI) -> None:
    instructions = "You are a geography teacher. Answer briefly."
    response = client.responses.create(
        model=MODEL,
        instructions=instructions,
        input=[{"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}],
        temperature=0,
    )
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": instructions}, {"role": "user", "content": QUESTION}],
        temperature=0,
    )
    # The same conversation: the instructions became the system message, so the prompts are equally long.
    assert response.usage is not None and response.usage.input_tokens == chat.usage.prompt_tokens
    assert "Paris" in response.output_text
    assert response.instructions == instructions


def test_stream_events_in_order_and_deltas_make_the_text(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=MODEL, input=QUESTION, temperature=0, stream=True))
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(types[4:-4]) == {"response.output_text.delta"} and len(types) > 10
    assert [e.sequence_number for e in events] == list(range(len(events)))
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed == events[-1].response.output_text and "Paris" in streamed

    # The SDK's stream helper assembles the response from the events. (Texts of two runs are not compared:
    # llama.cpp's reuse of a cached prompt prefix can change a greedy choice.)
    with client.responses.stream(model=MODEL, input=QUESTION, temperature=0) as stream:
        helper_text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == helper_text and "Paris" in helper_text


def test_max_output_tokens_makes_an_incomplete_response(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input=QUESTION, temperature=0, max_output_tokens=3)
    assert response.status == "incomplete"
    assert (
        response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    )
    assert response.usage is not None and response.usage.output_tokens == 3
    assert response.max_output_tokens == 3 and response.output_text


class City(BaseModel):
    city: str
    country: str
    is_capital: bool


def test_json_schema_format_output_validates(client: openai.OpenAI) -> None:
    schema = {**City.model_json_schema(), "additionalProperties": False}
    response = client.responses.create(
        model=MODEL,
        input="Describe Paris as JSON.",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
        temperature=0,
    )
    jsonschema.validate(json.loads(response.output_text), schema)
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"

    parsed = client.responses.parse(
        model=MODEL, input="Describe Tokyo as JSON.", text_format=City, temperature=0
    )
    assert isinstance(parsed.output_parsed, City)


def test_forced_function_call_then_its_output_continues(client: openai.OpenAI) -> None:
    question = {"role": "user", "content": "What is the weather in Oslo?"}
    first = client.responses.create(
        model=MODEL,
        input=[question],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "name": "get_weather"},
        temperature=0,
    )
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert call.id is not None and call.id.startswith("fc_") and call.call_id
    jsonschema.validate(json.loads(call.arguments), WEATHER_TOOL["parameters"])

    followup = client.responses.create(
        model=MODEL,
        input=[
            question,
            *first.output,
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature_c": -3}'},
        ],
        tools=[WEATHER_TOOL],
        tool_choice="none",
        temperature=0,
    )
    assert followup.status == "completed" and followup.output_text.strip()
    assert [item.type for item in followup.output] == ["message"]
    # The call and its result reached the model as the equivalent chat history does.
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[
            question,
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.call_id, "content": '{"temperature_c": -3}'},
        ],
        tools=[
            {
                "type": "function",
                "function": {k: WEATHER_TOOL[k] for k in ("name", "description", "parameters")},
            }
        ],
        tool_choice="none",
        temperature=0,
    )
    # Equal prompts have equal token counts; texts are not compared (see the stream test).
    assert followup.usage is not None and followup.usage.input_tokens == chat.usage.prompt_tokens

    events = list(
        client.responses.create(
            model=MODEL,
            input=[question],
            tools=[WEATHER_TOOL],
            tool_choice="required",
            temperature=0,
            stream=True,
        )
    )
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == done.arguments
    jsonschema.validate(json.loads(done.arguments), WEATHER_TOOL["parameters"])
    assert events[-1].type == "response.completed"


def test_previous_response_id_is_a_400_saying_the_server_is_stateless(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="Hi", previous_response_id="resp_123")
    assert caught.value.body["param"] == "previous_response_id"
    assert "stateless" in caught.value.body["message"]
