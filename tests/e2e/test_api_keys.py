"""API keys end to end: `multai keys` against a REST bridge of its own, in front of the shared mesh.

The bridge has its own state folder, so keys made here never reach the other tests' bridge.
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from multai.ports import free_port
from tests.e2e.mesh import PROJECT_ROOT, Mesh

CHAT_MODEL = "smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Say hello."}]


@dataclass
class Bridge:
    base_url: str
    state_dir: Path

    def keys(self, *args: str) -> str:
        """Runs `multai keys ARGS` on this bridge's state folder; returns its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "multai.cli", "keys", *args, "--state-dir", str(self.state_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=PROJECT_ROOT,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=120)


def bridge_command(mesh: Mesh, state_dir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable,
        "-m",
        "rest_bridge",
        "--host",
        host,
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
        "--certs-dir",
        str(mesh.certs_dir),
        "--image-store-dir",
        str(state_dir / "images"),
        "--scheduler-address",
        mesh.scheduler_address,
        "--chat-address",
        mesh.chat_address,
        "--audio-address",
        mesh.audio_address,
        "--image-address",
        mesh.image_address,
        "--vision-address",
        mesh.vision_address,
    ]


@pytest.fixture(scope="module")
def bridge(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    state_dir = tmp_path_factory.mktemp("keys-bridge")
    port = free_port()
    log = (state_dir / "bridge.log").open("wb")
    process = subprocess.Popen(
        bridge_command(mesh, state_dir, port), stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, (state_dir / "bridge.log").read_text()
        time.sleep(0.2)
    running = Bridge(f"http://127.0.0.1:{port}/v1", state_dir)
    running.keys("create", "admin")
    time.sleep(1.5)  # the bridge reloads keys every second
    yield running
    process.terminate()
    process.wait(30)


def test_without_a_key_or_with_a_wrong_one_is_401(bridge: Bridge) -> None:
    missing = httpx.post(f"{bridge.base_url}/chat/completions", json={"model": CHAT_MODEL}, timeout=30)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError) as refused:
        bridge.client("sk-multai-wrong").models.list()
    assert isinstance(refused.value.body, dict) and refused.value.body["code"] == "invalid_api_key"


def test_a_key_limited_to_two_requests_a_minute_gets_429_with_the_headers(bridge: Bridge) -> None:
    key = bridge.keys("create", "two-a-minute", "--rpm", "2")
    time.sleep(1.5)
    headers = {"authorization": f"Bearer {key}"}
    statuses = []
    for _ in range(3):
        response = httpx.get(f"{bridge.base_url}/models", headers=headers, timeout=30)
        statuses.append(response.status_code)
    assert statuses == [200, 200, 429]
    assert response.headers["x-ratelimit-limit-requests"] == "2"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-reset-requests"].endswith("s")
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_a_background_key_asking_for_urgent_gets_403(bridge: Bridge) -> None:
    key = bridge.keys("create", "batch-jobs", "--max-priority", "background")
    time.sleep(1.5)
    client = bridge.client(key)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(
            model=CHAT_MODEL, messages=HELLO, max_tokens=2, extra_headers={"X-MultAI-Priority": "0"}
        )
    assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "priority"
    # Asking for nothing runs at the key's own tier.
    assert client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=2).choices


def test_a_model_outside_the_keys_globs_does_not_exist_for_it(bridge: Bridge) -> None:
    key = bridge.keys("create", "chat-only", "--models", "smollm2-*")
    time.sleep(1.5)
    client = bridge.client(key)
    assert {model.id for model in client.models.list()} == {CHAT_MODEL}
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("whisper-1")
    # An alias of an allowed model is the same model.
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=2).choices


def test_usage_counts_match_the_usage_fields_returned(bridge: Bridge) -> None:
    key = bridge.keys("create", "metered")
    time.sleep(1.5)
    client = bridge.client(key)
    chat = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=5)
    embedded = client.embeddings.create(model="text-embedding-3-small", input=["one", "two words"])
    streamed = client.chat.completions.create(
        model=CHAT_MODEL, messages=HELLO, max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    stream_usage = [chunk.usage for chunk in streamed if chunk.usage is not None][-1]
    assert chat.usage is not None
    prompt = chat.usage.prompt_tokens + embedded.usage.prompt_tokens + stream_usage.prompt_tokens
    completion = chat.usage.completion_tokens + stream_usage.completion_tokens
    time.sleep(2.5)  # the bridge writes usage every second
    row = bridge.keys("usage", "metered").splitlines()[-1].split()
    assert row[:4] == ["metered", "3", str(prompt), str(completion)]
    metrics = httpx.get(bridge.base_url.removesuffix("/v1") + "/metrics", timeout=30).text
    assert f'multai_key_tokens_total{{key="metered",kind="completion"}} {float(completion)}' in metrics
    assert 'multai_key_requests_total{key="metered"} 3.0' in metrics


def test_a_revoked_key_stops_working(bridge: Bridge) -> None:
    key = bridge.keys("create", "short-lived")
    time.sleep(1.5)
    assert bridge.client(key).models.list().data
    bridge.keys("revoke", "short-lived")
    time.sleep(1.5)
    with pytest.raises(openai.AuthenticationError):
        bridge.client(key).models.list()


def test_binding_beyond_loopback_without_keys_refuses_to_start(mesh: Mesh, tmp_path: Path) -> None:
    done = subprocess.run(
        bridge_command(mesh, tmp_path, free_port(), host="0.0.0.0"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
        env=dict(os.environ, MULTAI_ALLOW_UNAUTHENTICATED="false"),
    )
    assert done.returncode != 0
    assert "multai keys create" in done.stderr
