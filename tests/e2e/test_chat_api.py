"""The OpenAI surface of the skeleton through the official SDK, against the real mesh and real models."""

import httpx
import openai
import pytest

from tests.e2e.mesh import Mesh

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def test_chat_answers_paris(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="smollm2-135m-instruct", messages=QUESTION, temperature=0)
    assert "Paris" in response.choices[0].message.content
    assert response.choices[0].finish_reason == "stop"
    assert response.model == "smollm2-135m-instruct"
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_streamed_text_equals_non_streamed_text(client: openai.OpenAI, mesh: Mesh) -> None:
    whole = client.chat.completions.create(model="smollm2-135m-instruct", messages=QUESTION, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=QUESTION,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 2
    streamed = "".join(c.choices[0].delta.content for c in content_chunks)
    assert streamed == whole.choices[0].message.content
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"

    # The SDK hides the terminator, so read the raw event stream once.
    with httpx.stream(
        "POST",
        f"{mesh.base_url}/chat/completions",
        timeout=60,
        json={
            "model": "smollm2-135m-instruct",
            "messages": QUESTION,
            "temperature": 0,
            "stream": True,
        },
    ) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        events = [line for line in raw.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"


def test_openai_alias_resolves_to_default_model(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="gpt-3.5-turbo", messages=QUESTION, temperature=0)
    assert response.model == "smollm2-135m-instruct"
    assert "Paris" in response.choices[0].message.content


def test_completions_with_gemma_base_model(client: openai.OpenAI) -> None:
    response = client.completions.create(
        model="gemma-3-270m", prompt="The capital of France is", temperature=0, max_tokens=8
    )
    assert response.model == "gemma-3-270m"
    assert response.choices[0].text.strip()
    assert response.choices[0].finish_reason in {"length", "stop"}
    assert response.usage.completion_tokens <= 8
    streamed = list(
        client.completions.create(
            model="gemma-3-270m", prompt="The capital of France is", temperature=0, max_tokens=8, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == response.choices[0].text


def test_models_lists_defaults_with_aliases(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"smollm2-135m-instruct", "gemma-3-270m"} <= set(models)
    assert "gpt-4o-mini" in models["smollm2-135m-instruct"].aliases
    assert client.models.retrieve("gpt-4").id == "smollm2-135m-instruct"


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert caught.value.status_code == 404
    assert caught.value.body["code"] == "model_not_found"
    assert caught.value.body["param"] == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-4"}, "messages"),
        ({"model": "gpt-4", "messages": QUESTION, "temperature": 7}, "temperature"),
        ({"model": "gpt-4", "messages": []}, "messages"),
        ({"model": "gpt-4", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ],
)
def test_invalid_bodies_are_400_in_openai_error_format(mesh: Mesh, body: dict, param: str) -> None:
    response = httpx.post(f"{mesh.base_url}/chat/completions", json=body, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def test_malformed_json_is_400(mesh: Mesh) -> None:
    response = httpx.post(
        f"{mesh.base_url}/chat/completions",
        content=b'{"model": "gpt-4", "messages": [',
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_every_response_carries_a_request_id(mesh: Mesh) -> None:
    ok = httpx.get(f"{mesh.base_url}/models", timeout=30)
    failed = httpx.post(f"{mesh.base_url}/chat/completions", json={}, timeout=30)
    echoed = httpx.get(f"{mesh.base_url}/models", headers={"X-Request-Id": "my-id-1"}, timeout=30)
    assert ok.headers["x-request-id"].startswith("req_")
    assert failed.headers["x-request-id"].startswith("req_")
    assert echoed.headers["x-request-id"] == "my-id-1"


def test_priority_header_and_body_are_validated(client: openai.OpenAI) -> None:
    urgent = client.chat.completions.create(
        model="gpt-4",
        messages=QUESTION,
        temperature=0,
        max_tokens=4,
        extra_headers={"X-MultAI-Priority": "0"},
    )
    assert urgent.choices[0].message.content
    background = client.chat.completions.create(
        model="gpt-4", messages=QUESTION, temperature=0, max_tokens=4, extra_body={"priority": 2}
    )
    assert background.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-4", messages=QUESTION, extra_headers={"X-MultAI-Priority": "urgent"}
        )
    assert caught.value.body["param"] == "priority"


def test_sampling_parameters_reach_the_engine(client: openai.OpenAI) -> None:
    story = [{"role": "user", "content": "Tell me a story about a cat."}]
    limited = client.chat.completions.create(model="gpt-4", messages=story, max_completion_tokens=3)
    assert limited.choices[0].finish_reason == "length"
    assert limited.usage.completion_tokens == 3

    seeded = [
        client.chat.completions.create(
            model="gpt-4",
            messages=story,
            temperature=1.2,
            seed=42,
            max_tokens=20,
            extra_body={"top_k": 50, "repeat_penalty": 1.1, "n_threads": 1, "n_gpu_layers": 0},
        )
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]
    other_seed = (
        client.chat.completions.create(model="gpt-4", messages=story, temperature=1.2, seed=7, max_tokens=20)
        .choices[0]
        .message.content
    )
    assert other_seed != seeded[0]

    greedy = client.chat.completions.create(model="gpt-4", messages=QUESTION, temperature=0)
    first_word = greedy.choices[0].message.content.split()[1]
    stopped = client.chat.completions.create(
        model="gpt-4", messages=QUESTION, temperature=0, stop=[first_word]
    )
    assert first_word not in stopped.choices[0].message.content
    assert greedy.choices[0].message.content.startswith(stopped.choices[0].message.content)
