"""The Batch API end to end with the official SDK, on SQLite and on a throwaway PostgreSQL: a batch of chat
and embedding lines, cancel, bad lines, the priority of interactive requests, and a SIGKILL of the whole
mesh mid-batch.

Each database gets a mesh of its own (in its own process group, so that one killpg takes all of it) with an
API key, so that the batch's usage is seen on the key, and a short claim lease, so that the lines of a
killed mesh are claimed again within seconds.
"""

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types import Batch, Completion, CreateEmbeddingResponse, ImagesResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from tests.e2e.mesh import PROJECT_ROOT, Mesh, start_mesh
from tests.postgres import throwaway_postgres

CHAT_MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "text-embedding-3-small"
LEASE_SECONDS = "3"
FINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class BatchMesh:
    """A mesh and how to reach it; the crash test replaces `mesh` with the restarted one."""

    mesh: Mesh
    folder: Path
    key: str
    env: dict[str, str]
    settings: dict[str, str] = field(default_factory=dict)

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.mesh.base_url, api_key=self.key, max_retries=0, timeout=120)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "multai.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=PROJECT_ROOT,
            env=self.env,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, models_dir: Path, log_name: str) -> None:
        self.mesh = start_mesh(models_dir, self.folder / log_name, own_process_group=True, **self.settings)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def batch_mesh(
    request: pytest.FixtureRequest, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BatchMesh]:
    folder = tmp_path_factory.mktemp(f"batch-{request.param}")
    database = throwaway_postgres() if request.param == "postgresql" else contextlib.nullcontext(None)
    with database as url:
        settings = {"batch_lease_seconds": LEASE_SECONDS, **({"database_url": url} if url else {})}
        env = dict(
            os.environ, MULTAI_STATE_DIR=str(folder / "state"), MULTAI_CERTS_DIR=str(folder / "state/certs")
        )
        if url:
            env["MULTAI_DATABASE_URL"] = url
        mesh = start_mesh(models_dir, folder / "serve.log", own_process_group=True, **settings)
        running = BatchMesh(mesh, folder, "", env, settings)
        running.key = running.cli("keys", "create", "batch-admin").strip()
        time.sleep(1.5)  # the bridge reloads keys every second
        yield running
        running.mesh.stop()


def chat_line(custom_id: str, content: str, max_tokens: int = 4) -> dict[str, Any]:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def embedding_line(custom_id: str, text: str) -> dict[str, Any]:
    body = {"model": EMBEDDING_MODEL, "input": text}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": body}


def upload(client: openai.OpenAI, lines: list[dict[str, Any]] | bytes) -> str:
    data = lines if isinstance(lines, bytes) else "".join(json.dumps(line) + "\n" for line in lines).encode()
    return client.files.create(file=("batch.jsonl", data), purpose="batch").id


def create(client: openai.OpenAI, lines: list[dict[str, Any]] | bytes, **options: Any) -> Batch:
    return client.batches.create(
        input_file_id=upload(client, lines),
        endpoint="/v1/chat/completions",
        completion_window="24h",
        **options,
    )


def wait_until(client: openai.OpenAI, batch_id: str, done: Any, timeout: float = 240) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status} with {batch.request_counts}"
        time.sleep(0.3)


def ended(client: openai.OpenAI, batch_id: str, timeout: float = 240) -> Batch:
    return wait_until(client, batch_id, lambda batch: batch.status in FINAL, timeout)


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_a_batch_of_chat_and_embedding_lines_completes_through_the_sdk(batch_mesh: BatchMesh) -> None:
    client = batch_mesh.client()
    lines = [chat_line(f"chat-{i}", f"Say the number {i}.") for i in range(50)]
    lines += [embedding_line(f"embed-{i}", f"sentence number {i}") for i in range(10)]
    batch = create(client, lines, metadata={"suite": "e2e"})
    assert (batch.status, batch.completion_window, batch.metadata) == ("validating", "24h", {"suite": "e2e"})
    done = ended(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (
        60,
        60,
        0,
    )
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.expires_at
    assert done.error_file_id is None
    output = lines_of(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(line["custom_id"] for line in lines)
    prompt_tokens = 0
    for line in output:
        assert line["error"] is None and line["response"]["status_code"] == 200
        assert line["id"] == line["response"]["request_id"]
        body = line["response"]["body"]
        parsed = (
            ChatCompletion.model_validate(body)
            if line["custom_id"].startswith("chat")
            else CreateEmbeddingResponse.model_validate(body)
        )
        assert parsed.usage is not None
        prompt_tokens += parsed.usage.prompt_tokens
    assert done.usage is not None and done.usage.input_tokens == prompt_tokens
    output_file = client.files.retrieve(done.output_file_id or "")
    assert output_file.purpose == "batch_output" and output_file.bytes > 0
    assert client.batches.list(limit=1).data[0].id == batch.id
    # The batch's usage is its key's.
    time.sleep(2.5)  # the bridge writes usage every second
    usage = batch_mesh.cli("keys", "usage", "batch-admin").splitlines()[-1].split()
    assert usage[0] == "batch-admin" and int(usage[2]) == prompt_tokens
    status = batch_mesh.cli("status", "--scheduler-address", batch_mesh.mesh.scheduler_address)
    assert f"{batch.id:<39} completed    60/60 100%" in status


def test_cancel_midway_keeps_what_finished(batch_mesh: BatchMesh) -> None:
    client = batch_mesh.client()
    lines = [chat_line(f"line-{i}", f"Tell a story about the number {i}.", max_tokens=24) for i in range(60)]
    batch = create(client, lines)
    wait_until(client, batch.id, lambda b: b.request_counts is not None and b.request_counts.completed >= 3)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = ended(client, batch.id, timeout=60)
    assert done.status == "cancelled" and done.cancelled_at and done.request_counts is not None
    output = lines_of(client, done.output_file_id)
    assert 3 <= len(output) == done.request_counts.completed < 60
    assert all(line["response"]["status_code"] == 200 for line in output)
    assert len({line["custom_id"] for line in output}) == len(output)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(
            ended(client, create(client, [chat_line("one", "Hi.")]).id).id  # a completed batch
        )


def test_every_endpoint_runs_bad_lines_go_to_the_error_file_and_a_file_not_jsonl_fails(
    batch_mesh: BatchMesh,
) -> None:
    client = batch_mesh.client()
    unknown_model = chat_line("unknown-model", "Hi.")
    unknown_model["body"]["model"] = "no-such-model"
    refused = chat_line("refused", "Hi.")
    refused["body"]["max_tokens"] = -1
    speech = {
        "custom_id": "speech",
        "method": "POST",
        "url": "/v1/audio/speech",
        "body": {"model": "tts-1", "input": "Hello.", "voice": "alloy", "response_format": "wav"},
    }

    def line(custom_id: str, url: str, body: dict[str, Any]) -> str:
        return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})

    data = "\n".join(
        [
            json.dumps(chat_line("good", "Hi.")),
            line(
                "completion", "/v1/completions", {"model": CHAT_MODEL, "prompt": "Once upon", "max_tokens": 4}
            ),
            line("response", "/v1/responses", {"model": CHAT_MODEL, "input": "Hi.", "max_output_tokens": 4}),
            line(
                "image",
                "/v1/images/generations",
                {"model": "dall-e-2", "prompt": "a red cube", "size": "64x64"},
            ),
            "{this is not json",
            json.dumps(unknown_model),
            json.dumps(refused),
            json.dumps({**chat_line("wrong-url", "Hi."), "url": "/v1/moderations"}),
            json.dumps(speech),
        ]
    ).encode()
    done = ended(client, create(client, data).id)
    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (9, 5, 4)
    errors = {line["custom_id"]: line for line in lines_of(client, done.error_file_id)}
    assert errors[None]["error"]["code"] == "invalid_json_line" and errors[None]["response"] is None
    assert errors["unknown-model"]["response"]["status_code"] == 404
    assert errors["unknown-model"]["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert errors["refused"]["response"]["status_code"] == 400
    assert errors["refused"]["response"]["body"]["error"]["param"] == "max_tokens"
    assert errors["wrong-url"]["error"]["code"] == "invalid_url"
    outputs = {line["custom_id"]: line for line in lines_of(client, done.output_file_id)}
    assert set(outputs) == {"good", "completion", "response", "image", "speech"}
    Completion.model_validate(outputs["completion"]["response"]["body"])
    assert Response.model_validate(outputs["response"]["response"]["body"]).output_text
    images = ImagesResponse.model_validate(outputs["image"]["response"]["body"])
    assert images.data and images.data[0].b64_json
    assert outputs["speech"]["response"]["body"]["content_type"] == "audio/wav"
    assert outputs["speech"]["response"]["body"]["audio"]

    failed = ended(client, create(client, b"id,prompt\n1,hello\n2,world\n").id)
    assert failed.status == "failed" and failed.failed_at and failed.errors and failed.errors.data
    assert [(e.code, e.line) for e in failed.errors.data] == [("invalid_json_line", n) for n in (1, 2, 3)]
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", b"{}"), purpose="fine-tune")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_does_not_exist")


def _urgent_timings(client: openai.OpenAI) -> tuple[float, float]:
    """Seconds to the first token and to the last of an urgent request shaped as one of the batch's lines."""
    started = time.monotonic()
    first = None
    for chunk in client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Write a poem about the sea."}],
        max_tokens=32,
        temperature=0,
        stream=True,
        extra_headers={"X-MultAI-Priority": "0"},
    ):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.monotonic() - started
    assert first is not None, "the urgent request streamed no text"
    return first, time.monotonic() - started


def test_an_urgent_request_waits_at_most_one_batch_line(batch_mesh: BatchMesh) -> None:
    client = batch_mesh.client()
    _urgent_timings(client)  # the model is resident and warm
    idle = [_urgent_timings(client) for _ in range(3)]
    idle_first = statistics.median(first for first, _ in idle)
    # The urgent request is shaped as a batch line: on the idle mesh, its latency is one line's generation.
    one_line = statistics.median(total for _, total in idle)
    lines = [chat_line(f"long-{i}", "Write a poem about the sea.", max_tokens=32) for i in range(30)]
    batch = create(client, lines)
    wait_until(client, batch.id, lambda b: b.request_counts is not None and b.request_counts.completed >= 2)
    busy = [_urgent_timings(client) for _ in range(3)]
    still = client.batches.retrieve(batch.id)
    client.batches.cancel(batch.id)
    ended(client, batch.id, timeout=60)
    assert still.status == "in_progress", "the batch ended before the urgent requests"
    waited = max(first for first, _ in busy) - idle_first
    ratio = max(total for _, total in busy) / one_line
    print(f"urgent request: idle {idle}, during the batch {busy}; waited {waited:.2f}s, ratio {ratio:.2f}")
    # Its wait for a start (to its first token, beyond the idle mesh's) is at most one line's generation,
    # with half again for noise: the batch leaves it a free slot, or it takes the next one to free up.
    assert waited <= 1.5 * one_line, (idle, busy)
    # Then it decodes beside the lines in flight (at most the batch's share of the slots): one line's wait
    # plus its own generation, slowed by sharing each step, stays within four idle latencies.
    assert ratio < 4.0, (idle, busy)


def test_a_batch_survives_a_sigkill_of_the_whole_mesh(batch_mesh: BatchMesh, models_dir: Path) -> None:
    client = batch_mesh.client()
    lines = [chat_line(f"crash-{i}", f"Count to {i}.", max_tokens=8) for i in range(40)]
    batch = create(client, lines)
    before = wait_until(
        client, batch.id, lambda b: b.request_counts is not None and b.request_counts.completed >= 5
    )
    os.killpg(batch_mesh.mesh.process.pid, signal.SIGKILL)
    assert before.status == "in_progress" and before.request_counts is not None
    assert before.request_counts.completed < 40
    batch_mesh.mesh.process.wait(30)
    batch_mesh.start(models_dir, "serve-after-kill.log")
    client = batch_mesh.client()
    done = ended(client, batch.id)
    assert done.status == "completed" and done.request_counts is not None
    assert done.request_counts.total == 40
    assert (done.request_counts.completed, done.request_counts.failed) == (40, 0)
    custom_ids = [line["custom_id"] for line in lines_of(client, done.output_file_id)]
    custom_ids += [line["custom_id"] for line in lines_of(client, done.error_file_id)]
    assert sorted(custom_ids) == sorted(line["custom_id"] for line in lines)
