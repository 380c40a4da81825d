"""`multai serve --edge`: Envoy in front of the bridge and the services, one address for both APIs."""

import base64
import io
import json
import wave
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from multai.client import MultAI
from multai.common.v1 import model_control_pb2, model_control_pb2_grpc
from multai.mesh_tls import MeshChannels
from multai.ports import free_port
from tests.e2e.mesh import Mesh, start_mesh

CHAT_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def admin_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def edge_mesh(models_dir: Path, tmp_path_factory: pytest.TempPathFactory, admin_port: int) -> Iterator[Mesh]:
    folder = tmp_path_factory.mktemp("edge")
    running = start_mesh(
        models_dir,
        folder / "serve.log",
        edge="true",
        edge_tls="true",
        bridge_port=str(free_port()),
        edge_admin_port=str(admin_port),
    )
    yield running
    running.stop()


def sdk(mesh: Mesh) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=mesh.base_url,
        api_key="local",
        max_retries=0,
        timeout=120,
        http_client=httpx.Client(verify=mesh.verify),
    )


def edge_address(mesh: Mesh) -> str:
    return mesh.base_url.removeprefix("https://").removesuffix("/v1")


def test_the_openai_sdk_works_through_the_edge(edge_mesh: Mesh) -> None:
    client = sdk(edge_mesh)
    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=6, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    speech = client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello there.", response_format="wav"
    )
    with wave.open(io.BytesIO(speech.content)) as audio:
        assert audio.getnframes() > 0
    transcript = client.audio.transcriptions.create(model="whisper-1", file=("hello.wav", speech.content))
    assert "hello" in transcript.text.lower()
    image = client.images.generate(model="gpt-image-1", prompt="a dot", size="64x64").data[0]
    assert base64.b64decode(image.b64_json or "").startswith(b"\x89PNG")


def test_the_grpc_client_works_through_the_same_address_and_lists_every_service(edge_mesh: Mesh) -> None:
    with MultAI(edge_address(edge_mesh), certs_dir=edge_mesh.certs_dir, timeout=120) as client:
        reply = client.chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
        )
        assert reply.choices[0].message.content is not None
        modalities = {model.modality for model in client.models.list()}
    assert {"chat", "audio", "image"} <= modalities


async def test_grpc_through_the_edge_needs_a_mesh_certificate(edge_mesh: Mesh, tmp_path: Path) -> None:
    """The edge re-originates calls with the mesh's own certificate, so it must not pass strangers on."""
    assert edge_mesh.edge_ca is not None
    ca = edge_mesh.edge_ca.read_bytes()
    anonymous = grpc.ssl_channel_credentials(root_certificates=ca)
    options = [("grpc.ssl_target_name_override", "multai-mesh")]
    request = model_control_pb2.ListModelsRequest()
    metadata = (("x-multai-service", "chat"),)
    async with grpc.aio.secure_channel(edge_address(edge_mesh), anonymous, options) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await model_control_pb2_grpc.ModelControlServiceStub(channel).ListModels(
                request, timeout=30, metadata=metadata
            )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with MeshChannels(edge_mesh.certs_dir).aio_channel(edge_address(edge_mesh)) as channel:
        listed = await model_control_pb2_grpc.ModelControlServiceStub(channel).ListModels(
            request, timeout=30, metadata=metadata
        )
    assert CHAT_MODEL in {model.id for model in listed.models}


def test_the_bridge_itself_is_not_on_the_public_port(edge_mesh: Mesh) -> None:
    """With --edge, uvicorn moved to the internal port: what answers on the public one is Envoy."""
    response = httpx.get(edge_mesh.base_url + "/models", verify=edge_mesh.verify, timeout=30)
    assert response.status_code == 200
    assert response.headers.get("server") == "envoy"


def test_the_bridges_metrics_are_reachable_through_the_edge_and_move(edge_mesh: Mesh) -> None:
    metrics_url = edge_mesh.base_url.removesuffix("/v1") + "/metrics"

    route = 'model="smollm2-135m-instruct",route="/v1/chat/completions"'
    series = {
        "requests": f'multai_http_requests_total{{{route},status="200"}}',
        "ttft": f"multai_time_to_first_token_seconds_count{{{route}}}",
        "generated": f"multai_generation_tokens_total{{{route}}}",
    }

    def scrape() -> dict[str, float]:
        lines = httpx.get(metrics_url, verify=edge_mesh.verify, timeout=30).text.splitlines()
        values = {}
        for name, prefix in series.items():
            line = next((line for line in lines if line.startswith(prefix + " ")), f"{prefix} 0")
            values[name] = float(line.rsplit(" ", 1)[1])
        return values

    before = scrape()
    reply = sdk(edge_mesh).chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Hi."}], max_tokens=2
    )
    after = scrape()
    assert reply.usage is not None
    assert after["requests"] == before["requests"] + 1
    assert after["ttft"] == before["ttft"] + 1
    assert after["generated"] == before["generated"] + reply.usage.completion_tokens


def test_a_body_over_the_edges_limit_is_an_openai_413_from_envoy(edge_mesh: Mesh) -> None:
    body = b'{"model": "smollm2-135m-instruct", "messages": "' + b"x" * (40 * 1024 * 1024) + b'"}'
    response = httpx.post(
        edge_mesh.base_url + "/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        verify=edge_mesh.verify,
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert response.headers.get("server") == "envoy"


def envoy_counter(admin_port: int, name: str) -> int:
    stats = httpx.get(f"http://127.0.0.1:{admin_port}/stats", params={"filter": f"^{name}$"}, timeout=30)
    return int(stats.text.split(": ", 1)[1])


def test_rest_requests_through_the_edge_are_decided_by_the_endpoint_picker(
    edge_mesh: Mesh, admin_port: int
) -> None:
    """With one node too, `--edge` asks the picker about each REST request (failure_mode_allow off)."""
    asked = "cluster.picker.upstream_rq_total"
    before = envoy_counter(admin_port, asked)
    sdk(edge_mesh).chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Hi."}], max_tokens=2
    )
    assert envoy_counter(admin_port, asked) == before + 1


def test_a_batch_file_past_the_edges_buffer_streams_through_to_the_bridge(
    edge_mesh: Mesh, admin_port: int
) -> None:
    """Batch input files may reach 200 MB: /v1/files is not held to the 32 MiB buffer of other requests."""
    line = json.dumps(
        {
            "custom_id": "request",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "x" * 900}]},
        }
    )
    content = "\n".join(line.replace('"request"', f'"request-{i}"') for i in range(40 * 1024)).encode()
    assert len(content) > 36 * 1024 * 1024
    asked = envoy_counter(admin_port, "cluster.picker.upstream_rq_total")
    client = sdk(edge_mesh)
    uploaded = client.files.create(file=("big.jsonl", content), purpose="batch")
    assert uploaded.bytes == len(content)
    assert client.files.content(uploaded.id).content == content
    client.files.delete(uploaded.id)
    # Nothing for the picker to decide: the upload went to a bridge without asking it.
    assert envoy_counter(admin_port, "cluster.picker.upstream_rq_total") == asked
