"""GET /healthz (the bridge is up), /readyz (the services behind it serve) and /metrics (Prometheus)."""

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter()
HEALTH_TIMEOUT_SECONDS = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the bridge process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: every service the bridge calls reports SERVING on gRPC health."""
    stubs: dict[str, health_pb2_grpc.HealthStub] = request.app.state.health
    states = {}
    for name, stub in stubs.items():
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT_SECONDS)
            states[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        except grpc.aio.AioRpcError as exc:
            states[name] = exc.code().name
    ready = all(state == "SERVING" for state in states.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "services": states}, status_code=200 if ready else 503
    )


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """The bridge's Prometheus metrics: requests, latency as the client sees it, usage per API key."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
