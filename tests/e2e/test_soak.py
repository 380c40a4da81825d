"""Soak: thousands of short requests through the mesh leave one stream as fast as on the fresh mesh.

Engines are driven from one thread each (llama.cpp's context by its batch engine, Whisper by its model's
engine thread); called from a pool of threads instead, every thread got an OpenMP team of its own and one
stream fell from ~177 to ~65 tokens/s after 1,500 requests. Each test compares the same process before
and after, in one run.
"""

import asyncio
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.mesh import Mesh, start_mesh

MODEL = "smollm2-135m-instruct"
CHAT_SOAK_REQUESTS = 2000
# Whisper takes ~0.1 s a clip here, so the audio soak is shorter; it checks the same thing the same way.
AUDIO_SOAK_REQUESTS = 300
SOAK_CONCURRENCY = 8


@pytest.fixture(scope="module")
def soak_mesh(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    running = start_mesh(models_dir, tmp_path_factory.mktemp("soak") / "serve.log")
    yield running
    running.stop()


def stream_tokens_per_s(client: openai.OpenAI) -> float:
    """The median decode speed of three 64-token streams, one at a time."""
    speeds = []
    for _ in range(3):
        times = []
        for chunk in client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Write a short story about a robot who learns to paint."}],
            max_tokens=64,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        ):
            times.append(time.perf_counter())
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        speeds.append((tokens - 1) / (times[-1] - times[0]))
    return statistics.median(speeds)


async def flood(base_url: str, path: str, requests: int, make_request: dict) -> None:
    """`requests` requests, SOAK_CONCURRENCY at a time; every one must succeed."""
    gate = asyncio.Semaphore(SOAK_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:

        async def one(index: int) -> None:
            async with gate:
                response = await http.post(path, **make_request(index))
                assert response.status_code == 200, response.text

        await asyncio.gather(*(one(i) for i in range(requests)))


def test_chat_stream_keeps_its_speed_after_2000_requests(soak_mesh: Mesh) -> None:
    client = openai.OpenAI(base_url=soak_mesh.base_url, api_key="x", max_retries=0, timeout=120)
    fresh = stream_tokens_per_s(client)

    def short_chat(index: int) -> dict:
        messages = [{"role": "user", "content": f"Say a word about {index}."}]
        return {"json": {"model": MODEL, "messages": messages, "max_tokens": 1}}

    asyncio.run(flood(soak_mesh.base_url, "/chat/completions", CHAT_SOAK_REQUESTS, short_chat))
    aged = stream_tokens_per_s(client)
    assert aged >= 0.9 * fresh, f"{aged:.0f} tok/s after the soak against {fresh:.0f} fresh"


def test_transcription_keeps_its_speed_after_the_audio_soak(soak_mesh: Mesh) -> None:
    client = openai.OpenAI(base_url=soak_mesh.base_url, api_key="x", max_retries=0, timeout=120)
    wav = client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input="The quick brown fox jumps over the lazy dog.",
        response_format="wav",
    ).content

    def seconds_per_transcription() -> float:
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            text = client.audio.transcriptions.create(model="whisper-tiny.en", file=("fox.wav", wav)).text
            timings.append(time.perf_counter() - started)
            assert "fox" in text.lower()
        return statistics.median(timings)

    fresh = seconds_per_transcription()

    def short_transcription(index: int) -> dict:
        return {"files": {"file": ("fox.wav", wav)}, "data": {"model": "whisper-tiny.en"}}

    asyncio.run(flood(soak_mesh.base_url, "/audio/transcriptions", AUDIO_SOAK_REQUESTS, short_transcription))
    aged = seconds_per_transcription()
    assert fresh / aged >= 0.9, f"{aged:.3f} s a clip after the soak against {fresh:.3f} s fresh"
