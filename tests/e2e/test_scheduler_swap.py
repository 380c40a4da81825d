"""Alternating requests between the two chat models swap them through the scheduler's memory planner."""

import asyncio
import subprocess
import sys

import openai

from multai.cli import fetch_status
from tests.e2e.mesh import PROJECT_ROOT, SWAP_RAM_BUDGET_BYTES, Mesh

CHAT_MODELS = {"smollm2-135m-instruct", "gemma-3-270m"}


def resident_chat_models(mesh: Mesh) -> list[str]:
    return [
        r.model
        for r in asyncio.run(fetch_status(mesh.channels, mesh.scheduler_address)).resident_models
        if r.model in CHAT_MODELS
    ]


def ask(client: openai.OpenAI, model: str) -> None:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)


def test_alternating_models_swap_and_status_shows_it(client: openai.OpenAI, mesh: Mesh) -> None:
    ask(client, "smollm2-135m-instruct")
    evictions_before = asyncio.run(fetch_status(mesh.channels, mesh.scheduler_address)).total_evictions
    for model in ["gemma-3-270m", "smollm2-135m-instruct", "gemma-3-270m"]:
        ask(client, model)
        assert resident_chat_models(mesh) == [model]

    status = asyncio.run(fetch_status(mesh.channels, mesh.scheduler_address))
    assert status.total_evictions - evictions_before >= 3
    cpu = status.devices[0]
    assert cpu.budget_bytes == SWAP_RAM_BUDGET_BYTES
    assert 0 < cpu.used_bytes <= SWAP_RAM_BUDGET_BYTES

    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "multai.cli",
            "status",
            "--scheduler-address",
            mesh.scheduler_address,
            "--certs-dir",
            str(mesh.certs_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
    ).stdout
    assert "gemma-3-270m" in printed
    assert "smollm2-135m-instruct" not in printed
    assert "evictions" in printed
