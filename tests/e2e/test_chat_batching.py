"""Continuous batching through the mesh: concurrent streams share decode steps, and each stays correct."""

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest

from multai.cli import fetch_status
from tests.e2e.mesh import CHAT_ONLY, Mesh, start_mesh

MODEL = "smollm2-135m-instruct"
OTHER_MODEL = "gemma-3-270m"
SLOTS = 4
STORY_TOKENS = 64


def story(index: int) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": f"Write a short story about robot number {index} who learns to paint."}
    ]


@dataclass
class Streamed:
    """One streamed reply: its text, the arrival time of each content chunk, and its usage."""

    text: str = ""
    chunk_times: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    finish_reason: str | None = None


async def stream_chat(
    client: openai.AsyncOpenAI, messages: list[dict[str, str]], max_tokens: int = STORY_TOKENS, **extra: Any
) -> Streamed:
    result = Streamed()
    stream = await client.chat.completions.create(
        model=extra.pop("model", MODEL),
        messages=messages,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        **extra,
    )
    async for chunk in stream:
        if chunk.usage is not None:
            result.completion_tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                result.text += choice.delta.content
                result.chunk_times.append(time.perf_counter())
            result.finish_reason = choice.finish_reason or result.finish_reason
    return result


@pytest.fixture(scope="module")
def batching_mesh(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A mesh of its own, so that no other test's requests share its batches or its timing."""
    folder = tmp_path_factory.mktemp("batching")
    running = start_mesh(models_dir, folder / "serve.log", node_services=CHAT_ONLY, parallel=str(SLOTS))
    yield running
    running.stop()


def async_client(mesh: Mesh) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mesh.base_url, api_key="not-needed", max_retries=0, timeout=300)


def test_four_streams_interleave_and_beat_running_them_one_after_another(batching_mesh: Mesh) -> None:
    async def scenario() -> tuple[float, float, list[Streamed]]:
        client = async_client(batching_mesh)
        await stream_chat(client, story(99), max_tokens=8)  # loads the model
        started = time.perf_counter()
        alone = [await stream_chat(client, story(i)) for i in range(SLOTS)]
        one_by_one = sum(r.completion_tokens for r in alone) / (time.perf_counter() - started)
        started = time.perf_counter()
        together = await asyncio.gather(*(stream_chat(client, story(i + SLOTS)) for i in range(SLOTS)))
        batched = sum(r.completion_tokens for r in together) / (time.perf_counter() - started)
        return one_by_one, batched, list(together)

    one_by_one, batched, together = asyncio.run(scenario())
    assert all(r.completion_tokens == STORY_TOKENS for r in together)
    # Every stream was still producing tokens when every other had started: they ran at the same time.
    assert max(r.chunk_times[0] for r in together) < min(r.chunk_times[-1] for r in together)
    merged = sorted((t, index) for index, r in enumerate(together) for t in r.chunk_times)
    switches = sum(1 for a, b in itertools.pairwise(merged) if a[1] != b[1])
    assert switches > STORY_TOKENS, "the streams' tokens interleave"
    assert batched >= 1.15 * one_by_one, f"batched {batched:.0f} tok/s vs one by one {one_by_one:.0f} tok/s"


def test_concurrent_greedy_replies_equal_the_same_requests_alone(batching_mesh: Mesh) -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        client = async_client(batching_mesh)
        prompts = [story(20 + i) for i in range(SLOTS)]
        alone = [(await stream_chat(client, p)).text for p in prompts]
        together = await asyncio.gather(*(stream_chat(client, p) for p in prompts))
        return alone, [r.text for r in together]

    alone, together = asyncio.run(scenario())
    # Each sequence has cells of its own, so the batch changes no sequence's arithmetic on this model.
    assert together == alone


def test_cancelling_one_of_four_streams_leaves_the_others_whole_and_frees_its_slot(
    batching_mesh: Mesh,
) -> None:
    async def scenario() -> None:
        client = async_client(batching_mesh)
        prompts = [story(40 + i) for i in range(SLOTS)]
        expected = await asyncio.gather(*(stream_chat(client, p, max_tokens=96) for p in prompts[1:]))

        async def cancelled_midway() -> None:
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=prompts[0],
                max_tokens=96,
                temperature=0,
                stream=True,  # type: ignore[arg-type]
            )
            chunks = 0
            async for chunk in stream:
                chunks += bool(chunk.choices and chunk.choices[0].delta.content)
                if chunks == 8:
                    break
            await stream.response.aclose()

        others = [asyncio.ensure_future(stream_chat(client, p, max_tokens=96)) for p in prompts[1:]]
        await cancelled_midway()
        # The freed slot serves a new request while the other three still run.
        newcomer = await stream_chat(client, story(50), max_tokens=8)
        still_running = [not task.done() for task in others]
        finished = await asyncio.gather(*others)
        assert newcomer.completion_tokens == 8
        assert any(still_running), "the new request did not have to wait for the batch to drain"
        assert [r.text for r in finished] == [r.text for r in expected]
        assert all(r.completion_tokens == 96 and r.finish_reason == "length" for r in finished)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = await fetch_status(batching_mesh.channels, batching_mesh.scheduler_address)
            if not status.leases:
                break
            await asyncio.sleep(0.1)
        assert not status.leases, "every slot is free again"

    asyncio.run(scenario())


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}


def test_json_schema_and_forced_tool_calls_validate_inside_full_batches(batching_mesh: Mesh) -> None:
    async def structured(client: openai.AsyncOpenAI, index: int) -> dict[str, Any]:
        response = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Describe person number {index} as JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}},
            temperature=0.8,
            seed=index,
            max_tokens=80,
        )
        return json.loads(response.choices[0].message.content or "")  # type: ignore[no-any-return]

    async def tool_call(client: openai.AsyncOpenAI, index: int) -> dict[str, Any]:
        response = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"What is the weather in city number {index}?"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            temperature=0.8,
            seed=index,
            max_tokens=80,
        )
        calls = response.choices[0].message.tool_calls or []
        assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
        return json.loads(calls[0].function.arguments)  # type: ignore[union-attr, no-any-return]

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        client = async_client(batching_mesh)
        people: list[dict[str, Any]] = []
        weather: list[dict[str, Any]] = []
        for start in range(0, 20, 2):
            # Every batch is full: two of each kind side by side.
            batch = await asyncio.gather(
                structured(client, start),
                structured(client, start + 1),
                tool_call(client, start),
                tool_call(client, start + 1),
            )
            people += batch[:2]
            weather += batch[2:]
        return people, weather

    people, weather = asyncio.run(scenario())
    assert len(people) == len(weather) == 20
    for person in people:
        jsonschema.validate(person, SCHEMA)
    for arguments in weather:
        jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]


def test_urgent_request_for_another_model_goes_before_the_queued_batch(batching_mesh: Mesh) -> None:
    """Model A runs a full batch with A requests queued; an urgent request for B starts once A's streams
    in flight end, before any queued A request."""

    async def scheduler_shows(check: Any, what: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if check(await fetch_status(batching_mesh.channels, batching_mesh.scheduler_address)):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"the scheduler never showed {what}")

    async def scenario() -> None:
        client = async_client(batching_mesh)
        await stream_chat(client, story(0), max_tokens=4)  # A resident
        in_flight = [
            asyncio.ensure_future(stream_chat(client, story(60 + i), max_tokens=48)) for i in range(SLOTS)
        ]
        await scheduler_shows(
            lambda s: sum(lease.model == MODEL for lease in s.leases) == SLOTS, "a full batch"
        )
        queued = [asyncio.ensure_future(stream_chat(client, story(70 + i), max_tokens=8)) for i in range(3)]
        await scheduler_shows(lambda s: sum(w.model == MODEL for w in s.queue) == len(queued), "A queued")
        urgent = await stream_chat(
            client,
            [{"role": "user", "content": "Hello"}],
            max_tokens=4,
            model=OTHER_MODEL,
            extra_headers={"X-MultAI-Priority": "0"},
        )
        flights = await asyncio.gather(*in_flight)
        later = await asyncio.gather(*queued)
        urgent_first = urgent.chunk_times[0]
        assert urgent_first > max(r.chunk_times[-1] for r in flights), "B waited for the streams in flight"
        assert urgent_first < min(r.chunk_times[0] for r in later), "B went before every queued A request"

    asyncio.run(scenario())
