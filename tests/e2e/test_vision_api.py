"""Vision through /v1/chat/completions and /v1/vision with the llava-tiny-random fixture."""

import base64
import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import openai
import pytest
from PIL import Image

from tests.e2e.mesh import Mesh


def png_data_url(color: tuple[int, int, int] = (200, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_message(url: str, text: str = "What is in this picture?") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}],
        }
    ]


def test_chat_completion_with_a_data_url_image(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="gpt-4o", messages=image_message(png_data_url()), max_tokens=6, temperature=0
    )
    assert response.model == "llava-tiny-random"
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert response.usage is not None and response.usage.completion_tokens == 6
    # The prompt holds the image's tokens as well as the text's.
    assert response.usage.prompt_tokens > len(["What", "is", "in", "this", "picture?"])


def test_streamed_vision_completion_matches_the_whole_one(client: openai.OpenAI) -> None:
    messages = image_message(png_data_url((10, 120, 240)))
    whole = client.chat.completions.create(
        model="gpt-4-vision-preview", messages=messages, max_tokens=5, temperature=0
    )
    stream = client.chat.completions.create(
        model="gpt-4-vision-preview",
        messages=messages,
        max_tokens=5,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_the_seed_designs_vision_endpoint(mesh: Mesh) -> None:
    response = httpx.post(
        f"{mesh.base_url}/vision",
        json={
            "model": "llava-tiny-random",
            "prompt": "Describe it.",
            "image": png_data_url(),
            "max_tokens": 4,
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] == 4
    # Bare base64 works too.
    bare = png_data_url().split(",", 1)[1]
    response = httpx.post(
        f"{mesh.base_url}/vision",
        json={"model": "gpt-4o", "prompt": "Describe it.", "image": bare, "max_tokens": 2},
        timeout=120,
    )
    assert response.status_code == 200, response.text


class _RecordingHandler(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _RecordingHandler.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recording_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    _RecordingHandler.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cat.png"
    server.shutdown()


def test_remote_urls_are_refused_without_a_connection(client: openai.OpenAI, recording_server: str) -> None:
    for url in ("http://169.254.169.254/latest/meta-data/iam", recording_server):
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="gpt-4o", messages=image_message(url), max_tokens=2)
        assert isinstance(raised.value.body, dict)
        assert raised.value.body["code"] == "image_url_not_allowed"
        assert raised.value.body["param"] == "messages[0].content[1].image_url.url"
    assert _RecordingHandler.hits == []


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,@@not base64@@",
        "data:image/png;base64," + base64.b64encode(b"these bytes are not a picture").decode(),
        "data:text/plain;base64,aGVsbG8=",
        "file:///etc/passwd",
    ],
)
def test_corrupt_or_unsupported_images_are_400(client: openai.OpenAI, url: str) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=image_message(url), max_tokens=2)


def test_a_chat_only_model_given_an_image_names_a_vision_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="smollm2-135m-instruct", messages=image_message(png_data_url()), max_tokens=2
        )
    assert "llava-tiny-random" in raised.value.message
    assert isinstance(raised.value.body, dict) and raised.value.body["param"] == "model"


def test_vision_models_are_listed_as_fixtures(client: openai.OpenAI) -> None:
    cards = {model.id: model.model_dump() for model in client.models.list()}
    for model_id, modality in (("llava-tiny-random", "vision"), ("sdxl-tiny-random", "image")):
        assert cards[model_id]["fixture"] is True and cards[model_id]["modality"] == modality
    assert "gpt-4o" in cards["llava-tiny-random"]["aliases"]
    assert cards["smollm2-135m-instruct"]["fixture"] is False


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "look"}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"5": -100}}, "logit_bias"),
        ({"n": 2}, "n"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_what_llava_cannot_honour_is_refused(client: openai.OpenAI, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="gpt-4o", messages=image_message(png_data_url()), max_tokens=2, extra_body=extra
        )
    assert isinstance(raised.value.body, dict) and raised.value.body["param"] == param


def test_multai_models_list_marks_the_fixtures(models_dir: Path) -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "multai.cli", "models", "list", "--models-dir", str(models_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    for fixture in ("sdxl-tiny-random", "llava-tiny-random", "bark-tiny-random"):
        assert rows[fixture].endswith("(fixture)")
    assert "(fixture)" not in rows["smollm2-135m-instruct"]
