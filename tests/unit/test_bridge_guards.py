"""The bridge's guards on the real app, through httpx's ASGI transport: CORS when configured, the Host
allow-list's names, the body limit from Content-Length, and /openapi.json's statuses."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from rest_bridge.app import create_app
from rest_bridge.config import BridgeSettings
from rest_bridge.guards import host_name


def bridge(tmp_path: Path, **settings: object) -> httpx.AsyncClient:
    app = create_app(
        BridgeSettings(image_store_dir=tmp_path / "images", state_dir=tmp_path / "state", **settings)
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


@pytest.fixture
async def configured(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with bridge(
        tmp_path,
        cors_allow_origins=["https://app.example"],
        allowed_hosts=["ai.example"],
        max_request_body_bytes=1000,
    ) as client:
        yield client


async def test_cors_answers_only_the_configured_origins(configured: httpx.AsyncClient) -> None:
    preflight = {"access-control-request-method": "POST"}
    allowed = await configured.options(
        "/v1/chat/completions", headers={"origin": "https://app.example", **preflight}
    )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = await configured.options(
        "/v1/chat/completions", headers={"origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in other.headers


async def test_allowed_hosts_are_answered_beside_loopback(configured: httpx.AsyncClient) -> None:
    assert (await configured.get("/healthz", headers={"host": "ai.example:8080"})).status_code == 200
    assert (await configured.get("/healthz", headers={"host": "[::1]:8080"})).status_code == 200
    refused = await configured.get("/healthz", headers={"host": "ai.example.evil"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "host_not_allowed"


async def test_a_declared_length_over_the_limit_is_413_before_reading(configured: httpx.AsyncClient) -> None:
    response = await configured.post(
        "/v1/embeddings", content=b"x" * 1001, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == {
        "message": "the request body is larger than this server's limit of 1000 bytes",
        "type": "invalid_request_error",
        "param": None,
        "code": "request_too_large",
    }


@pytest.mark.parametrize(
    ("header", "name"),
    [("localhost:8080", "localhost"), ("[::1]:80", "::1"), ("127.0.0.1", "127.0.0.1"), ("::1", "::1")],
)
def test_host_names_lose_their_port(header: str, name: str) -> None:
    assert host_name(header) == name


async def test_openapi_documents_the_real_statuses_and_no_422(tmp_path: Path) -> None:
    async with bridge(tmp_path) as client:
        schema = (await client.get("/openapi.json")).json()
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert "422" not in chat["responses"]
    assert {"400", "401", "403", "404", "413", "429", "503", "504"} <= set(chat["responses"])
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert chat["security"] == [{"bearer": []}]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    speech = schema["paths"]["/v1/audio/speech"]["post"]["responses"]["200"]["content"]
    assert "audio/mpeg" in speech and "application/json" not in speech
    assert set(schema["paths"]["/healthz"]["get"]["responses"]) == {"200", "400"}
