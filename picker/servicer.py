"""Envoy's ExternalProcessor, speaking the Gateway API Inference Extension's endpoint-picker protocol.

Envoy sends a request's headers, then (unless it has none) its buffered body. The answer to the last of
them names the chosen endpoint, with its fallbacks (`ip:port,ip:port`), in the header
`x-gateway-destination-endpoint` and in the dynamic metadata `envoy.lb`, both the same; or it is an
immediate 503 when no node is ready, or 429 with Retry-After when the request is shed.
"""

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

from multai.openai_params import PRIORITY_HEADER
from picker.keys import KeyTiers
from picker.metrics import PickerMetrics
from picker.policy import NORMAL, Decision, NodeView, NoEndpoint, PickRules, Route, Shed, choose

log = logging.getLogger(__name__)

DESTINATION_HEADER = "x-gateway-destination-endpoint"
DESTINATION_NAMESPACE = "envoy.lb"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_KEY = "x-gateway-destination-endpoint-subset"
# Bodies up to this are parsed on the event loop (well under a millisecond), larger ones in a thread.
PARSE_ON_LOOP_BYTES = 64 * 1024
# A multipart form's `model` field (audio uploads), without parsing the whole form.
FORM_MODEL = re.compile(rb'name="model"\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]{1,256})\r\n')


def body_fields(content_type: str, body: bytes) -> tuple[str | None, int | None]:
    """The `model` and `priority` a body names: a JSON object's fields, or a multipart form's model."""
    if "multipart/form-data" in content_type:
        match = FORM_MODEL.search(body)
        return (match[1].decode(errors="replace") if match else None), None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    model, priority = parsed.get("model"), parsed.get("priority")
    return (model if isinstance(model, str) else None), (priority if priority in (0, 1, 2) else None)


def priority_of(headers: dict[str, str], body_priority: int | None, key_tier: int | None = None) -> int:
    """The request's queue level as the bridge reads it: the header wins, then the body, else normal;
    anything unreadable is normal. Never more urgent than the key's tier: a key limited to background runs
    at background by default, and the bridge refuses a more urgent level it asks for."""
    value = headers.get(PRIORITY_HEADER.lower())
    if value is not None:
        level = int(value) if value in ("0", "1", "2") else NORMAL
    else:
        level = NORMAL if body_priority is None else body_priority
    return level if key_tier is None else max(level, key_tier)


def _subset(request: ext_proc.ProcessingRequest) -> list[str] | None:
    """The endpoints the proxy allows for this request, when it names any."""
    hint = request.metadata_context.filter_metadata.get(SUBSET_NAMESPACE)
    if hint is None or SUBSET_KEY not in hint.fields:
        return None
    value = hint.fields[SUBSET_KEY]
    if value.HasField("list_value"):
        return [item.string_value for item in value.list_value.values]
    return [part.strip() for part in value.string_value.split(",") if part.strip()]


def _error_body(status: int, message: str, code: str) -> bytes:
    error_type = "rate_limit_error" if status == 429 else "server_error"
    return json.dumps(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    ).encode()


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, raw_value=value.encode()))


class EndpointPicker(external_processor_pb2_grpc.ExternalProcessorServicer):
    """Answers Envoy's ext_proc stream of each request with the node that should serve it."""

    def __init__(
        self,
        views: Callable[[], list[NodeView]],
        picked: Callable[[str, str | None, str], None],
        rules: PickRules,
        retry_after_seconds: int,
        metrics: PickerMetrics,
        key_tiers: KeyTiers | None = None,
    ) -> None:
        self._views = views
        self._picked = picked
        self._rules = rules
        self._retry_after = retry_after_seconds
        self._metrics = metrics
        self._key_tiers = key_tiers

    async def Process(
        self, request_iterator: AsyncIterator[ext_proc.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ext_proc.ProcessingResponse]:
        headers: dict[str, str] = {}
        subset: list[str] | None = None
        async for request in request_iterator:
            phase = request.WhichOneof("request")
            if phase == "request_headers":
                headers = {
                    h.key.lower(): h.raw_value.decode(errors="replace") or h.value
                    for h in request.request_headers.headers.headers
                }
                subset = _subset(request)
                if request.request_headers.end_of_stream:
                    yield self._answer("request_headers", headers, (None, None), subset, time.perf_counter())
                else:
                    yield ext_proc.ProcessingResponse(request_headers=ext_proc.HeadersResponse())
            elif phase == "request_body":
                started = time.perf_counter()
                body = request.request_body.body
                content_type = headers.get("content-type", "")
                # Parsing a large body (a long prompt, an upload) would hold up every other decision.
                if len(body) > PARSE_ON_LOOP_BYTES:
                    fields = await asyncio.to_thread(body_fields, content_type, body)
                else:
                    fields = body_fields(content_type, body)
                yield self._answer("request_body", headers, fields, subset, started)
            elif phase is not None:
                # Envoy sends nothing else in the configured mode; an empty answer lets it continue.
                yield ext_proc.ProcessingResponse(**{phase: {}})

    def _answer(
        self,
        phase: str,
        headers: dict[str, str],
        fields: tuple[str | None, int | None],
        subset: list[str] | None,
        started: float,
    ) -> ext_proc.ProcessingResponse:
        model, body_priority = fields
        tiers = self._key_tiers
        tier = tiers.tier(headers.get("authorization", "")) if tiers is not None else None
        priority = priority_of(headers, body_priority, tier)
        decision = choose(self._views(), model, priority, self._rules, subset)
        response = self._response(phase, decision, priority, headers.get("x-request-id", ""))
        self._metrics.observe(decision, priority, time.perf_counter() - started)
        return response

    def _response(
        self, phase: str, decision: Decision, priority: int, request_id: str
    ) -> ext_proc.ProcessingResponse:
        match decision:
            case Route(endpoints=endpoints, model=model):
                # The bridge names the request by Envoy's x-request-id, and so does the node's status.
                self._picked(endpoints[0], model, request_id)
                destination = ",".join(endpoints)
                common = ext_proc.CommonResponse(
                    header_mutation=ext_proc.HeaderMutation(
                        set_headers=[_header(DESTINATION_HEADER, destination)]
                    )
                )
                metadata = struct_pb2.Struct()
                metadata.update({DESTINATION_NAMESPACE: {DESTINATION_HEADER: destination}})
                if phase == "request_headers":
                    return ext_proc.ProcessingResponse(
                        request_headers=ext_proc.HeadersResponse(response=common), dynamic_metadata=metadata
                    )
                return ext_proc.ProcessingResponse(
                    request_body=ext_proc.BodyResponse(response=common), dynamic_metadata=metadata
                )
            case Shed(waiting=waiting):
                log.info("shed a priority-%d request: %d waiting on every node", priority, waiting)
                return self._refusal(
                    http_status_pb2.TooManyRequests,
                    f"every node is saturated ({waiting} requests waiting); priority {priority} requests are "
                    "shed first, retry later",
                    "overloaded",
                    [_header("retry-after", str(self._retry_after))],
                )
            case NoEndpoint(reason=reason):
                return self._refusal(http_status_pb2.ServiceUnavailable, reason, "no_endpoint_ready", [])

    @staticmethod
    def _refusal(
        status: http_status_pb2.StatusCode.ValueType,
        message: str,
        code: str,
        headers: list[base_pb2.HeaderValueOption],
    ) -> ext_proc.ProcessingResponse:
        headers = [*headers, _header("content-type", "application/json")]
        return ext_proc.ProcessingResponse(
            immediate_response=ext_proc.ImmediateResponse(
                status=http_status_pb2.HttpStatus(code=status),
                headers=ext_proc.HeaderMutation(set_headers=headers),
                body=_error_body(int(status), message, code),
                details=code,
            )
        )
