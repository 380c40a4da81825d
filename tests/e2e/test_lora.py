"""LoRA adapters served per request, and `multai models add`/`add-lora`/`remove`, through a real mesh.

The models folder is made only with the CLI: the bundled SmolLM2 GGUF copied elsewhere and added, the
adapter this project trains (multai/fixtures/signoff_lora.py: every reply ends with a sign-off) added at
scale 1 and at scale 0, and a fixture diffusers folder added without its manifest.
"""

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from multai.client import MultAI
from multai.fixtures.signoff_lora import ADAPTER_CACHE, SIGNOFF
from multai.registry import MANIFEST_NAME
from multai.scheduler_client import fetch_status
from tests.e2e.mesh import PROJECT_ROOT, Mesh, start_mesh

# Training the adapter takes a few minutes the first time; it is cached in .cache/lora after that.
pytestmark = pytest.mark.timeout(900)

BASE = "smollm2"
ADAPTER = "smollm2-signoff"
ADAPTER_OFF = "smollm2-signoff-off"
SPARE = "smollm2-signoff-spare"
IMAGE_MODEL = "sdxl-added"
QUESTIONS = [
    "What is the capital of Italy?",
    "Name a large animal.",
    "What is three plus four?",
    "Tell me about the sun.",
    "What do cats eat?",
    "Give me a colour.",
    "How tall is a tree?",
    "What is rain?",
    "Suggest a hobby.",
    "Why is grass green?",
]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "sunny": {"type": "boolean"}},
    "required": ["city", "sunny"],
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
        },
    },
}


def multai(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "multai.cli", *args], capture_output=True, text=True, cwd=PROJECT_ROOT
    )


def add(models: Path, *args: str) -> str:
    result = multai("models", *args, "--models-dir", str(models))
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def signoff_adapter(models_dir: Path) -> Path:
    base_gguf = models_dir / "smollm2-135m-instruct" / "model.gguf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "multai.fixtures.signoff_lora",
            str(ADAPTER_CACHE),
            "--base-gguf",
            str(base_gguf),
        ],
        check=True,
        cwd=PROJECT_ROOT,
    )
    return ADAPTER_CACHE


@pytest.fixture(scope="module")
def added_models(models_dir: Path, signoff_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lora")
    models = root / "models"
    downloads = root / "downloads"
    downloads.mkdir()
    gguf_file = downloads / "SmolLM2-135M-Instruct-Q4_1.gguf"
    shutil.copy(models_dir / "smollm2-135m-instruct" / "model.gguf", gguf_file)
    add(models, "add", str(gguf_file), "--id", BASE)
    add(models, "add-lora", str(signoff_adapter), "--base", BASE, "--id", ADAPTER, "--alias", "signoff")
    add(models, "add-lora", str(signoff_adapter), "--base", BASE, "--id", ADAPTER_OFF, "--scale", "0")
    add(models, "add", str(signoff_adapter), "--base", BASE, "--id", SPARE)
    sdxl = shutil.copytree(
        models_dir / "sdxl-tiny-random",
        downloads / "sdxl-tiny",
        ignore=shutil.ignore_patterns(MANIFEST_NAME),
    )
    add(models, "add", str(sdxl), "--id", IMAGE_MODEL)
    return models


@pytest.fixture(scope="module")
def lora_mesh(added_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    running = start_mesh(added_models, tmp_path_factory.mktemp("lora-mesh") / "serve.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(lora_mesh: Mesh) -> openai.OpenAI:
    return openai.OpenAI(base_url=lora_mesh.base_url, api_key="not-needed", max_retries=0, timeout=120)


def reply(client: openai.OpenAI, model: str, question: str, **extra: Any) -> str:
    response = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=64,
        **extra,
    )
    return response.choices[0].message.content or ""


def test_add_writes_the_manifest_from_the_files_own_metadata(added_models: Path, models_dir: Path) -> None:
    manifest = tomllib.loads((added_models / BASE / MANIFEST_NAME).read_text())
    assert manifest["size_bytes"] == (models_dir / "smollm2-135m-instruct" / "model.gguf").stat().st_size
    assert (manifest["backend"], manifest["n_layers"]) == ("llama_cpp", 30)
    adapter = tomllib.loads((added_models / ADAPTER / MANIFEST_NAME).read_text())
    assert (adapter["backend"], adapter["base"], adapter["scale"]) == ("llama_cpp_lora", BASE, 1.0)
    image = tomllib.loads((added_models / IMAGE_MODEL / MANIFEST_NAME).read_text())
    assert (image["modality"], image["backend"]) == ("image", "diffusers")


def test_add_refuses_what_it_cannot_serve(added_models: Path, signoff_adapter: Path, tmp_path: Path) -> None:
    missing_base = multai(
        "models",
        "add-lora",
        str(signoff_adapter),
        "--base",
        "no-such-model",
        "--models-dir",
        str(added_models),
    )
    assert missing_base.returncode != 0
    assert "base model 'no-such-model'" in missing_base.stderr
    noise = tmp_path / "weights.bin"
    noise.write_bytes(bytes(range(256)) * 64)
    refused = multai("models", "add", str(noise), "--models-dir", str(added_models))
    assert refused.returncode != 0
    assert "is not a GGUF file" in refused.stderr
    assert not (added_models / "weights").exists()


def test_models_lists_adapters_with_their_parent(client: openai.OpenAI) -> None:
    cards = {m.id: m.model_dump() for m in client.models.list().data}
    assert cards[ADAPTER]["parent"] == BASE
    assert cards[ADAPTER_OFF]["parent"] == BASE
    assert cards[BASE]["parent"] is None
    assert cards[IMAGE_MODEL]["modality"] == "image"


def test_the_adapter_changes_the_reply_and_scale_zero_does_not(client: openai.OpenAI) -> None:
    question = QUESTIONS[0]
    base = reply(client, BASE, question)
    assert reply(client, ADAPTER, question) != base
    assert reply(client, ADAPTER_OFF, question) == base
    assert reply(client, "signoff", question) == reply(client, ADAPTER, question)  # the alias


def test_the_trained_adapter_signs_off_its_replies(client: openai.OpenAI) -> None:
    adapted = [reply(client, ADAPTER, q) for q in QUESTIONS]
    base = [reply(client, BASE, q) for q in QUESTIONS]
    assert sum(SIGNOFF in text for text in adapted) >= 9, adapted
    assert not any(SIGNOFF in text for text in base)


def test_base_and_adapter_requests_run_together_on_one_loaded_base(
    client: openai.OpenAI, lora_mesh: Mesh
) -> None:
    alone = {(model, q): reply(client, model, q) for model in (BASE, ADAPTER) for q in QUESTIONS[:2]}

    async def together() -> dict[tuple[str, str], str]:
        async_client = openai.AsyncOpenAI(
            base_url=lora_mesh.base_url, api_key="not-needed", max_retries=0, timeout=120
        )
        keys = list(alone)

        async def one(model: str, question: str) -> str:
            response = await async_client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=64
            )
            return response.choices[0].message.content or ""

        replies = await asyncio.gather(*(one(model, q) for model, q in keys))
        await async_client.close()
        return dict(zip(keys, replies, strict=True))

    concurrent = asyncio.run(together())
    for (model, _), text in concurrent.items():
        assert (SIGNOFF in text) == (model == ADAPTER), text
    same = sum(concurrent[key] == alone[key] for key in alone)
    assert same == len(alone), (concurrent, alone)

    status = asyncio.run(fetch_status(lora_mesh.channels, lora_mesh.scheduler_address))
    resident = {r.model: r for r in status.resident_models}
    assert [r.model for r in status.resident_models].count(BASE) == 1
    assert resident[ADAPTER].size_bytes < resident[BASE].size_bytes
    llama_models = {m for m in resident if m.startswith("smollm2")}
    assert llama_models <= {BASE, ADAPTER, ADAPTER_OFF}


def test_streaming_tools_json_schema_and_logprobs_work_with_an_adapter(client: openai.OpenAI) -> None:
    question = QUESTIONS[1]
    streamed = client.chat.completions.create(
        model=ADAPTER,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=64,
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert text == reply(client, ADAPTER, question)

    structured = reply(
        client,
        ADAPTER,
        "Describe the weather in Rome as JSON.",
        response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}},
    )
    assert set(json.loads(structured)) == {"city", "sunny"}

    called = client.chat.completions.create(
        model=ADAPTER,
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=64,
    )
    calls = called.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
    assert "city" in json.loads(calls[0].function.arguments)  # type: ignore[union-attr]

    with_logprobs = client.chat.completions.create(
        model=ADAPTER,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=8,
        logprobs=True,
        top_logprobs=2,
    )
    entries = with_logprobs.choices[0].logprobs.content or []  # type: ignore[union-attr]
    assert len(entries) == 8 and all(len(e.top_logprobs) == 2 for e in entries)


def test_the_grpc_client_names_the_adapter_as_its_model(client: openai.OpenAI, lora_mesh: Mesh) -> None:
    with MultAI(chat=lora_mesh.chat_address, timeout=120, certs_dir=lora_mesh.certs_dir) as grpc_client:
        response = grpc_client.chat.completions.create(
            model=ADAPTER,
            messages=[{"role": "user", "content": QUESTIONS[2]}],
            temperature=0,
            max_tokens=64,
        )
    assert response.model == ADAPTER
    assert response.choices[0].message.content == reply(client, ADAPTER, QUESTIONS[2])


def test_an_added_fixture_folder_serves_images(client: openai.OpenAI) -> None:
    image = client.images.generate(
        model=IMAGE_MODEL,
        prompt="a red square",
        size="256x256",
        response_format="b64_json",
        extra_body={"num_inference_steps": 2},
    )
    assert image.data
    assert base64.b64decode(image.data[0].b64_json or "").startswith(b"\x89PNG")


def test_remove_refuses_a_loaded_model_and_deletes_an_unloaded_one(
    client: openai.OpenAI, lora_mesh: Mesh, added_models: Path
) -> None:
    reply(client, ADAPTER, QUESTIONS[3])  # loaded now
    mesh_options = [
        "--models-dir",
        str(added_models),
        "--scheduler-address",
        lora_mesh.scheduler_address,
        "--certs-dir",
        str(lora_mesh.certs_dir),
    ]
    refused = multai("models", "remove", ADAPTER, *mesh_options)
    assert refused.returncode != 0
    assert f"{ADAPTER} is loaded" in refused.stderr
    assert (added_models / ADAPTER / MANIFEST_NAME).is_file()

    removed = multai("models", "remove", SPARE, *mesh_options)
    assert removed.returncode == 0, removed.stderr
    assert not (added_models / SPARE).exists()
    forced = multai("models", "remove", ADAPTER_OFF, "--force", *mesh_options)
    assert forced.returncode == 0, forced.stderr
    assert not (added_models / ADAPTER_OFF).exists()
    # A running mesh stops serving what was removed (here an adapter that was loaded, with --force).
    wait_for_models(client, lambda ids: ADAPTER_OFF not in ids and SPARE not in ids)
    with pytest.raises(openai.NotFoundError):
        reply(client, ADAPTER_OFF, QUESTIONS[0])


def wait_for_models(client: openai.OpenAI, done: Callable[[set[str]], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done({model.id for model in client.models.list()}):
        assert time.monotonic() < deadline, "the running mesh did not follow the models folder"
        time.sleep(0.5)


def test_a_model_added_to_a_running_mesh_is_served_without_a_restart(
    client: openai.OpenAI, added_models: Path, models_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "second.gguf"
    shutil.copy(models_dir / "smollm2-135m-instruct" / "model.gguf", copy)
    add(added_models, "add", str(copy), "--id", "smollm2-live", "--alias", "live")
    wait_for_models(client, lambda ids: "smollm2-live" in ids)
    assert reply(client, "live", QUESTIONS[0]) == reply(client, BASE, QUESTIONS[0])
    removed = multai("models", "remove", "smollm2-live", "--force", "--models-dir", str(added_models))
    assert removed.returncode == 0, removed.stderr
    wait_for_models(client, lambda ids: "smollm2-live" not in ids)
