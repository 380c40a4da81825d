"""Every process's Prometheus metrics move with the requests: the bridge's and each model service's."""

import base64

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.mesh import Mesh

CHAT_MODEL = "smollm2-135m-instruct"


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample at url, keyed by name and labels."""
    text = httpx.get(url, timeout=30).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def test_a_streamed_chat_moves_the_bridges_and_the_chat_services_metrics(
    mesh: Mesh, client: openai.OpenAI
) -> None:
    bridge_url = mesh.base_url.removesuffix("/v1") + "/metrics"
    chat_url = mesh.service_metrics_urls["chat"]
    route = {"route": "/v1/chat/completions", "model": CHAT_MODEL}
    bridge_before, chat_before = samples(bridge_url), samples(chat_url)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",  # an alias: the metrics carry the model's id
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
    bridge_after, chat_after = samples(bridge_url), samples(chat_url)

    requests = "multai_http_requests_total"
    assert (
        value(bridge_after, requests, **route, status="200")
        == value(bridge_before, requests, **route, status="200") + 1
    )
    ttft = "multai_time_to_first_token_seconds_count"
    assert value(bridge_after, ttft, **route) == value(bridge_before, ttft, **route) + 1
    itl = "multai_inter_token_latency_seconds_count"
    assert value(bridge_after, itl, **route) > value(bridge_before, itl, **route)

    model = {"model": CHAT_MODEL}
    assert value(chat_after, ttft, **model) == value(chat_before, ttft, **model) + 1
    generated = "multai_generation_tokens_total"
    assert (
        value(chat_after, generated, **model) - value(chat_before, generated, **model)
        == usage.completion_tokens
    )
    prompt = "multai_prompt_tokens_total"
    assert value(chat_after, prompt, **model) - value(chat_before, prompt, **model) == usage.prompt_tokens
    assert value(chat_after, "multai_num_requests_running", **model) == 0
    assert (
        "multai_model_load_seconds_count",
        frozenset(model.items()),
    ) in chat_after


def test_audio_seconds_and_images_are_counted_where_they_are_made(mesh: Mesh, client: openai.OpenAI) -> None:
    audio_url, image_url = mesh.service_metrics_urls["audio"], mesh.service_metrics_urls["image"]
    audio_before, image_before = samples(audio_url), samples(image_url)
    speech = client.audio.speech.create(
        model="tts-1", voice="alloy", input="One two three.", response_format="wav"
    )
    transcript = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", speech.content), response_format="verbose_json"
    )
    images = client.images.generate(
        model="dall-e-2", prompt="a dot", size="64x64", n=2, response_format="b64_json"
    )
    assert all(base64.b64decode(image.b64_json or "") for image in images.data)
    audio_after, image_after = samples(audio_url), samples(image_url)
    seconds = "multai_audio_seconds_total"
    counted = value(audio_after, seconds, model="whisper-base") - value(
        audio_before, seconds, model="whisper-base"
    )
    assert abs(counted - transcript.duration) < 0.01
    made = "multai_images_total"
    assert (
        value(image_after, made, model="sdxl-tiny-random")
        == value(image_before, made, model="sdxl-tiny-random") + 2
    )
