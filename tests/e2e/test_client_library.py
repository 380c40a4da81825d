"""The gRPC client library (`multai.client`) against the real mesh: each service at its own address."""

import base64
import io
import wave
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from multai.client import APITimeoutError, AsyncMultAI, MultAI, NotFoundError
from multai.client.types import ImageProgress
from multai.openai.images import ImagesResponse
from tests.e2e.mesh import Mesh

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
SENTENCE = "Please send the report to the finance team by Friday."


@pytest.fixture(scope="module")
def grpc_client(mesh: Mesh) -> Iterator[MultAI]:
    with MultAI(
        chat=mesh.chat_address,
        audio=mesh.audio_address,
        image=mesh.image_address,
        timeout=120,
        certs_dir=mesh.certs_dir,
    ) as client:
        yield client


def test_streamed_chat_with_urgent_priority(grpc_client: MultAI) -> None:
    stream = grpc_client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=QUESTION,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        priority="urgent",
    )
    chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 2 and "Paris" in "".join(content)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= len(content)
    assert {c.model for c in chunks} == {"smollm2-135m-instruct"}


async def test_async_chat_equals_the_sync_reply(mesh: Mesh, grpc_client: MultAI) -> None:
    whole = grpc_client.chat.completions.create(model="gpt-3.5-turbo", messages=QUESTION, temperature=0)
    async with AsyncMultAI(chat=mesh.chat_address, timeout=120, certs_dir=mesh.certs_dir) as async_client:
        reply = await async_client.chat.completions.create(
            model="gpt-3.5-turbo", messages=QUESTION, temperature=0, priority=2
        )
        stream = await async_client.chat.completions.create(
            model="gpt-3.5-turbo", messages=QUESTION, temperature=0, stream=True
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert reply.model == "smollm2-135m-instruct"
    assert reply.choices[0].message.content == whole.choices[0].message.content == streamed
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_transcription_of_the_mesh_s_speech_in_the_background(grpc_client: MultAI) -> None:
    speech = grpc_client.audio.speech.create(
        model="tts-1", voice="alloy", input=SENTENCE, response_format="wav"
    )
    assert speech.content_type == "audio/wav"
    with wave.open(io.BytesIO(speech.content)) as w:
        assert w.getnframes() / w.getframerate() > 1.0
    transcript = grpc_client.audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", speech.content), priority="background"
    )
    words = transcript.text.lower()
    assert "report" in words and "finance" in words
    verbose = grpc_client.audio.transcriptions.create(
        model="whisper-1",
        file=speech.content,
        response_format="verbose_json",
        timestamp_granularities=["word"],
        priority="background",
    )
    assert verbose.language == "english" and verbose.words and verbose.segments is None


def test_image_generation_reports_each_step(grpc_client: MultAI) -> None:
    steps: list[ImageProgress] = []
    response = grpc_client.images.generate(
        model="dall-e-2",
        prompt="a red bicycle",
        n=1,
        size="64x64",
        num_inference_steps=2,
        seed=3,
        response_format="b64_json",
        on_progress=steps.append,
        priority="urgent",
    )
    assert [(p.step, p.total_steps) for p in steps] == [(1, 2), (2, 2)]
    (image,) = response.data
    assert image.url is None and image.revised_prompt == "a red bicycle" and response.seed == 3
    with Image.open(io.BytesIO(base64.b64decode(image.b64_json or ""))) as picture:
        assert picture.format == "PNG" and picture.size == (64, 64)
    # As from the REST bridge: the same model, and size only where OpenAI's schema has it.
    assert isinstance(response, ImagesResponse) and response.size is None


def test_embeddings(grpc_client: MultAI) -> None:
    response = grpc_client.embeddings.create(
        model="text-embedding-3-small", input=["a cat", "a dog", "stock market"]
    )
    cat, dog, stocks = (np.array(d.embedding) for d in response.data)
    assert response.model == "all-minilm-l6-v2" and len(cat) == 384
    assert cat @ dog > cat @ stocks


def test_models_of_every_service(grpc_client: MultAI) -> None:
    models = {m.id: m for m in grpc_client.models.list()}
    assert {"smollm2-135m-instruct", "whisper-base", "all-minilm-l6-v2"} <= set(models)
    assert grpc_client.models.retrieve("gpt-3.5-turbo").id == "smollm2-135m-instruct"


def test_unknown_model_and_too_short_deadline(grpc_client: MultAI) -> None:
    with pytest.raises(NotFoundError) as missing:
        grpc_client.chat.completions.create(model="no-such-model", messages=QUESTION, stream=True)
    assert (missing.value.status_code, missing.value.code, missing.value.param) == (
        404,
        "model_not_found",
        "model",
    )
    with pytest.raises(APITimeoutError):
        grpc_client.chat.completions.create(
            model="smollm2-135m-instruct", messages=QUESTION, max_tokens=200, timeout=0.01
        )
    # The mesh still serves after the abandoned call.
    reply = grpc_client.chat.completions.create(
        model="smollm2-135m-instruct", messages=QUESTION, max_tokens=5
    )
    assert reply.choices[0].finish_reason in ("stop", "length")
