"""Tracing on (MULTAI_TRACING=console): one chat request is one trace through bridge, chat service and
scheduler, its context carried in gRPC metadata."""

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.mesh import CHAT_ONLY, start_mesh


def spans_in(log: str) -> list[dict[str, Any]]:
    """The JSON spans the console exporter wrote, one per line, among the processes' other output."""
    spans = []
    for line in log.splitlines():
        if line.startswith("{") and '"trace_id"' in line:
            spans.append(json.loads(line))
    return spans


@pytest.mark.timeout(600)
def test_one_chat_request_is_one_trace_across_the_mesh(models_dir: Path, tmp_path: Path) -> None:
    mesh = start_mesh(models_dir, tmp_path / "serve.log", node_services=CHAT_ONLY, tracing="console")
    try:
        client = openai.OpenAI(base_url=mesh.base_url, api_key="local", max_retries=0, timeout=120)
        client.chat.completions.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Hi."}], max_tokens=3
        )
    finally:
        # The processes export their last spans as they exit.
        assert mesh.stop(60) == 0
    spans = spans_in(mesh.log())
    http = [span for span in spans if span["name"] == "POST /v1/chat/completions"]
    assert len(http) == 1, [span["name"] for span in spans]
    trace_id = http[0]["context"]["trace_id"]
    in_trace = {
        (span["resource"]["attributes"]["service.name"], span["name"])
        for span in spans
        if span["context"]["trace_id"] == trace_id
    }
    assert ("multai-chat", "/multai.chat.v1.ChatService/CreateChatCompletion") in in_trace, in_trace
    assert ("multai-scheduler", "/multai.scheduler.v1.SchedulerService/Acquire") in in_trace, in_trace
    # The service's span hangs under the bridge's, and the scheduler's under the service's.
    by_id = {span["context"]["span_id"]: span for span in spans}
    chat = next(span for span in spans if span["name"] == "/multai.chat.v1.ChatService/CreateChatCompletion")
    assert by_id[chat["parent_id"]]["resource"]["attributes"]["service.name"] == "multai-bridge"
    acquire = next(span for span in spans if span["name"].endswith("/Acquire"))
    assert acquire["parent_id"] == chat["context"]["span_id"]
