"""response_format json_object and json_schema: grammar-constrained replies always parse and validate."""

import json

import httpx
import jsonschema
import openai
import pytest

from tests.e2e.mesh import Mesh

CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "country": {"type": "string", "maxLength": 40},
        "population_millions": {"type": "number"},
        "is_capital": {"type": "boolean"},
    },
    "required": ["city", "country", "population_millions", "is_capital"],
    "additionalProperties": False,
}
CITIES = [
    "Paris",
    "Tokyo",
    "Lagos",
    "Lima",
    "Oslo",
    "Cairo",
    "Seoul",
    "Quito",
    "Hanoi",
    "Dakar",
    "Berlin",
    "Madrid",
    "Nairobi",
    "Toronto",
    "Sydney",
    "Mumbai",
    "Chicago",
    "Istanbul",
    "Bogota",
    "Vienna",
]


def test_json_schema_reply_validates_twenty_times_out_of_twenty(client: openai.OpenAI) -> None:
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "city_facts", "schema": CITY_SCHEMA, "strict": True},
    }
    for index, city in enumerate(CITIES):
        reply = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"Give facts about {city} as JSON."}],
            response_format=response_format,
            temperature=0.8,
            seed=index,
            max_tokens=200,
        )
        jsonschema.validate(json.loads(reply.choices[0].message.content), CITY_SCHEMA)


def test_json_object_reply_parses_streamed_too(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "user", "content": "Describe a cat as a JSON object with the keys name and color."}
            ],
            response_format={"type": "json_object"},
            temperature=0,
            max_tokens=300,
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # Like OpenAI's, a reply cut off by max_tokens is cut-off JSON; this one ends on its own.
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert set(json.loads(text)) == {"name", "color"}


def test_bad_response_formats_are_400(mesh: Mesh) -> None:
    base = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5}
    for response_format in (
        {"type": "json_schema"},
        {"type": "yaml"},
        {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}},
    ):
        response = httpx.post(
            f"{mesh.base_url}/chat/completions", json={**base, "response_format": response_format}, timeout=60
        )
        assert response.status_code == 400, response_format
        assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("stream", [False, True])
def test_schema_the_engine_cannot_enforce_is_400(mesh: Mesh, stream: bool) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 5,
        "stream": stream,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": {"$ref": "#/nope"}},
        },
    }
    response = httpx.post(f"{mesh.base_url}/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "response_format"
