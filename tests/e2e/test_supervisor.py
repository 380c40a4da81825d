"""The supervisor against real failures: a chat service SIGKILLed mid-stream, and a clean stop."""

import asyncio
import os
import signal
import time
from pathlib import Path

import openai
import psutil
import pytest

from multai.cli import fetch_status
from tests.e2e.mesh import CHAT_ONLY, Mesh, start_mesh


def chat_pid(mesh: Mesh) -> int:
    services = asyncio.run(fetch_status(mesh.channels, mesh.scheduler_address)).services
    return next(s.pid for s in services if s.service == "chat")


def test_killed_chat_service_fails_the_stream_promptly_and_is_restarted(
    models_dir: Path, tmp_path: Path
) -> None:
    mesh = start_mesh(models_dir, tmp_path / "serve.log", node_services=CHAT_ONLY)
    try:
        client = openai.OpenAI(base_url=mesh.base_url, api_key="x", max_retries=0, timeout=60)
        victim = chat_pid(mesh)
        stream = client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "Write a very long story about a dragon."}],
            max_tokens=1500,
            stream=True,
        )
        received = 0
        killed_at = 0.0
        with pytest.raises(openai.APIError):
            for _ in stream:
                received += 1
                if received == 5:
                    os.kill(victim, signal.SIGKILL)
                    killed_at = time.monotonic()
        assert killed_at, "the stream ended before the service could be killed"
        assert time.monotonic() - killed_at < 5, "the client must hear of the crash promptly"

        mesh.wait_ready(timeout=60)
        assert chat_pid(mesh) != victim
        answer = client.chat.completions.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert answer.choices[0].message.content
        assert "restarting" in mesh.log()
    finally:
        children = psutil.Process(mesh.process.pid).children(recursive=True)
        assert mesh.stop() == 0
    time.sleep(0.5)
    assert [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []
