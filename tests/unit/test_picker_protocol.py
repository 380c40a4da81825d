"""The picker's ext_proc answers, over a real grpc.aio server: the Inference Extension's protocol."""

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from google.protobuf import struct_pb2

from multai.api_keys import KeyStore
from multai.scheduler.v1 import scheduler_pb2 as pb
from multai.state_db import open_engine
from picker.keys import KeyTiers
from picker.metrics import PickerMetrics
from picker.policy import NodeView, PickRules
from picker.servicer import DESTINATION_HEADER, EndpointPicker, body_fields

CATALOG = [pb.ModelFootprint(model="small", size_bytes=100, slots=2)]


def idle_node(endpoint: str, waiting: int = 0) -> NodeView:
    status = pb.GetStatusResponse(
        services=[pb.ServiceStatus(service="chat", models=CATALOG)],
        queue=[pb.WaiterStatus(model="small", level=1)] * waiting,
        devices=[pb.DeviceStatus(budget_bytes=1000)],
    )
    return NodeView(endpoint, status, 0.0, Counter())


class Picker:
    """A served EndpointPicker over nodes the test sets, and what it was told it picked."""

    def __init__(self, key_tiers: KeyTiers | None = None) -> None:
        self.nodes: list[NodeView] = []
        self.picks: list[tuple[str, str | None, str]] = []
        self.metrics = PickerMetrics()
        rules = PickRules(shed_background_waiting=2, shed_normal_waiting=4)
        self.servicer = EndpointPicker(
            lambda: self.nodes,
            lambda e, m, r: self.picks.append((e, m, r)),
            rules,
            7,
            self.metrics,
            key_tiers,
        )


Served = tuple[Picker, external_processor_pb2_grpc.ExternalProcessorStub]


@contextlib.asynccontextmanager
async def serving(picker: Picker) -> AsyncIterator[Served]:
    server = grpc.aio.server()
    external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(picker.servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield picker, external_processor_pb2_grpc.ExternalProcessorStub(channel)
    await server.stop(None)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serving(Picker()) as running:
        yield running


def headers(
    pairs: dict[str, str], end_of_stream: bool, subset: list[str] | None = None
) -> ext_proc.ProcessingRequest:
    request = ext_proc.ProcessingRequest(
        request_headers=ext_proc.HttpHeaders(
            headers=base_pb2.HeaderMap(
                headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
            ),
            end_of_stream=end_of_stream,
        )
    )
    if subset is not None:
        hint = struct_pb2.Struct()
        hint.update({"x-gateway-destination-endpoint-subset": subset})
        request.metadata_context.filter_metadata["envoy.lb.subset_hint"].CopyFrom(hint)
    return request


def body(data: bytes) -> ext_proc.ProcessingRequest:
    return ext_proc.ProcessingRequest(request_body=ext_proc.HttpBody(body=data, end_of_stream=True))


async def exchange(
    stub: external_processor_pb2_grpc.ExternalProcessorStub, *requests: ext_proc.ProcessingRequest
) -> list[ext_proc.ProcessingResponse]:
    call = stub.Process()
    answers = []
    for request in requests:
        await call.write(request)
        answers.append(await call.read())
    await call.done_writing()
    return answers


def destination(response: ext_proc.ProcessingResponse, phase: str) -> tuple[str, str]:
    """The endpoint list in the header mutation and in the `envoy.lb` metadata."""
    mutation = getattr(response, phase).response.header_mutation
    (header,) = [h for h in mutation.set_headers if h.header.key == DESTINATION_HEADER]
    metadata = response.dynamic_metadata.fields["envoy.lb"].struct_value.fields[DESTINATION_HEADER]
    return header.header.raw_value.decode(), metadata.string_value


JSON = {"content-type": "application/json", ":method": "POST", "x-request-id": "req-1"}


async def test_a_body_is_read_for_its_model_and_the_answer_names_endpoint_and_fallback(
    served: Served,
) -> None:
    picker, stub = served
    picker.nodes = [idle_node("10.0.0.1:8080", waiting=1), idle_node("10.0.0.2:8080")]
    first, second = await exchange(
        stub, headers(JSON, end_of_stream=False), body(json.dumps({"model": "small"}).encode())
    )
    # Headers first (the body follows): the answer to them continues without a decision.
    assert first.WhichOneof("response") == "request_headers"
    assert not first.request_headers.response.header_mutation.set_headers
    header, metadata = destination(second, "request_body")
    assert header == metadata == "10.0.0.2:8080,10.0.0.1:8080"
    assert picker.picks == [("10.0.0.2:8080", "small", "req-1")]


async def test_a_request_without_a_body_is_decided_on_its_headers(served: Served) -> None:
    picker, stub = served
    picker.nodes = [idle_node("10.0.0.1:8080")]
    (answer,) = await exchange(stub, headers({":method": "GET"}, end_of_stream=True))
    assert destination(answer, "request_headers") == ("10.0.0.1:8080", "10.0.0.1:8080")


async def test_no_ready_node_is_503_and_the_subset_is_honoured(served: Served) -> None:
    picker, stub = served
    (answer,) = await exchange(stub, headers({":method": "GET"}, end_of_stream=True))
    assert answer.immediate_response.status.code == 503
    error = json.loads(answer.immediate_response.body)["error"]
    assert error["code"] == "no_endpoint_ready" and error["type"] == "server_error"
    picker.nodes = [idle_node("10.0.0.1:8080"), idle_node("10.0.0.2:8080")]
    (answer,) = await exchange(stub, headers({":method": "GET"}, True, subset=["10.0.0.1:8080"]))
    assert destination(answer, "request_headers")[0] == "10.0.0.1:8080"
    (answer,) = await exchange(stub, headers({":method": "GET"}, True, subset=["10.9.9.9:1"]))
    assert answer.immediate_response.status.code == 503


async def test_shed_requests_get_429_with_retry_after_background_first(served: Served) -> None:
    picker, stub = served
    picker.nodes = [idle_node("10.0.0.1:8080", waiting=3)]
    payload = json.dumps({"model": "small"}).encode()
    _, shed = await exchange(stub, headers({**JSON, "x-multai-priority": "2"}, False), body(payload))
    assert shed.immediate_response.status.code == 429
    retry_after = {h.header.key: h.header.raw_value for h in shed.immediate_response.headers.set_headers}
    assert retry_after["retry-after"] == b"7"
    assert json.loads(shed.immediate_response.body)["error"]["type"] == "rate_limit_error"
    # The body's own priority counts when no header says otherwise.
    _, shed = await exchange(
        stub, headers(JSON, False), body(json.dumps({"model": "small", "priority": 2}).encode())
    )
    assert shed.immediate_response.status.code == 429
    _, routed = await exchange(stub, headers(JSON, False), body(payload))
    assert routed.WhichOneof("response") == "request_body"
    outcomes = picker.metrics.registry.get_sample_value(
        "multai_picker_decisions_total", {"outcome": "shed", "priority": "2"}
    )
    assert outcomes == 2


def test_the_model_is_read_from_json_and_from_multipart_forms() -> None:
    assert body_fields("application/json", b'{"model": "a", "priority": 0}') == ("a", 0)
    assert body_fields("application/json", b"[1]") == (None, None)
    assert body_fields("application/json", b"not json") == (None, None)
    form = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF...\r\n'
        b'--x\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-tiny\r\n--x--\r\n'
    )
    assert body_fields("multipart/form-data; boundary=x", form) == ("whisper-tiny", None)


async def test_a_large_body_is_read_for_its_model_too(served: Served) -> None:
    # Past PARSE_ON_LOOP_BYTES the body is parsed off the event loop; the answer is the same.
    picker, stub = served
    picker.nodes = [idle_node("10.0.0.1:8080", waiting=1), idle_node("10.0.0.2:8080")]
    prompt = "sea " * 100_000
    payload = json.dumps({"model": "small", "messages": [{"role": "user", "content": prompt}]}).encode()
    _, answer = await exchange(stub, headers(JSON, end_of_stream=False), body(payload))
    header, _ = destination(answer, "request_body")
    assert header.split(",")[0] == "10.0.0.2:8080"
    assert picker.picks == [("10.0.0.2:8080", "small", "req-1")]


async def test_a_background_tier_keys_requests_are_shed_as_the_bridge_will_run_them(tmp_path: Path) -> None:
    """The bridge runs a background-only key's requests at background whatever they ask: so does the
    picker's shedding, from the keys in the state database (a real SQLite one here)."""
    store = KeyStore(open_engine(f"sqlite:///{tmp_path / 'multai.db'}"))
    _, nightly = store.create("nightly", max_priority=2)
    _, interactive = store.create("interactive", max_priority=0)
    tiers = KeyTiers(store)
    refreshing = asyncio.create_task(tiers.refresh_forever(0.05))
    try:
        for _ in range(100):
            if tiers.tier(f"Bearer {nightly}") is not None:
                break
            await asyncio.sleep(0.05)
        assert tiers.tier(f"Bearer {nightly}") == 2 and tiers.tier(f"Bearer {interactive}") == 0
        assert tiers.tier("Bearer sk-not-a-key") is None and tiers.tier(nightly) is None
        async with serving(Picker(tiers)) as (picker, stub):
            # Past the background bar (2), short of the normal one (4).
            picker.nodes = [idle_node("10.0.0.1:8080", waiting=3)]
            payload = json.dumps({"model": "small"}).encode()

            async def outcome(extra_headers: dict[str, str]) -> str | None:
                _, answer = await exchange(stub, headers({**JSON, **extra_headers}, False), body(payload))
                return answer.WhichOneof("response")

            assert await outcome({"authorization": f"Bearer {nightly}"}) == "immediate_response"
            # Asking for urgent does not help: the bridge refuses it, and the picker counts it at the tier.
            urgent = {"authorization": f"Bearer {nightly}", "x-multai-priority": "0"}
            assert await outcome(urgent) == "immediate_response"
            assert await outcome({"authorization": f"Bearer {interactive}"}) == "request_body"
            assert await outcome({"authorization": "Bearer sk-not-a-key"}) == "request_body"
            assert await outcome({}) == "request_body"
    finally:
        refreshing.cancel()
