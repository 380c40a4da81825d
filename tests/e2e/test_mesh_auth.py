"""Mutual TLS on the real mesh: no gRPC port answers a caller without a client certificate from the mesh's
CA, whatever it calls, and one made by `multai certs client` is let in."""

from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2_grpc

from multai.audio.v1 import audio_pb2, audio_pb2_grpc
from multai.chat.v1 import chat_pb2, chat_pb2_grpc
from multai.cli import MODEL_SERVICES, main
from multai.client import APIConnectionError, AsyncMultAI, MultAI
from multai.common.v1 import common_pb2, model_control_pb2, model_control_pb2_grpc
from multai.image.v1 import image_pb2, image_pb2_grpc
from multai.mesh_tls import TARGET_NAME_OVERRIDE, MeshChannels, create_mesh_certs, issue_client_cert
from multai.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from multai.vision.v1 import vision_pb2, vision_pb2_grpc
from tests.e2e.mesh import Mesh

APP = "e2e-app"
TIMEOUT = 10
MODELS = {
    "chat": "smollm2-135m-instruct",
    "audio": "tts-1",
    "image": "sdxl-tiny-random",
    "vision": "llava-tiny-random",
}
HI = "Hi"

Call = Callable[[grpc.aio.Channel, str], Awaitable[object]]


async def register(channel: grpc.aio.Channel, target: str) -> object:
    hello = scheduler_pb2.ServiceHello(service="intruder", pid=1)
    stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
    return await stub.Register(iter([scheduler_pb2.RegisterRequest(hello=hello)]), timeout=TIMEOUT).read()


async def acquire(channel: grpc.aio.Channel, target: str) -> object:
    claim = scheduler_pb2.LeaseClaim(
        service_id="intruder", request_id="r", model=MODELS["chat"], priority=common_pb2.PRIORITY_URGENT
    )
    stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
    return await stub.Acquire(iter([scheduler_pb2.AcquireRequest(claim=claim)]), timeout=TIMEOUT).read()


async def get_status(channel: grpc.aio.Channel, target: str) -> scheduler_pb2.GetStatusResponse:
    stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
    status: scheduler_pb2.GetStatusResponse = await stub.GetStatus(
        scheduler_pb2.GetStatusRequest(), timeout=TIMEOUT
    )
    return status


async def list_models(channel: grpc.aio.Channel, target: str) -> model_control_pb2.ListModelsResponse:
    stub = model_control_pb2_grpc.ModelControlServiceStub(channel)
    listing: model_control_pb2.ListModelsResponse = await stub.ListModels(
        model_control_pb2.ListModelsRequest(), timeout=TIMEOUT
    )
    return listing


async def load_model(channel: grpc.aio.Channel, target: str) -> object:
    stub = model_control_pb2_grpc.ModelControlServiceStub(channel)
    return await stub.LoadModel(model_control_pb2.LoadModelRequest(model=MODELS[target]), timeout=TIMEOUT)


async def unload_model(channel: grpc.aio.Channel, target: str) -> object:
    stub = model_control_pb2_grpc.ModelControlServiceStub(channel)
    return await stub.UnloadModel(model_control_pb2.UnloadModelRequest(model=MODELS[target]), timeout=TIMEOUT)


async def infer(channel: grpc.aio.Channel, target: str) -> object:
    """The first message of the service's own generation stream."""
    if target == "chat":
        message = chat_pb2.ChatMessage(role="user", content=HI)
        request = chat_pb2.CreateChatCompletionRequest(model=MODELS[target], messages=[message])
        return (
            await chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion(request, timeout=TIMEOUT).read()
        )
    if target == "audio":
        speech = audio_pb2.CreateSpeechRequest(model=MODELS[target], input=HI, voice="alloy")
        return await audio_pb2_grpc.AudioServiceStub(channel).CreateSpeech(speech, timeout=TIMEOUT).read()
    if target == "image":
        images = image_pb2.GenerateImagesRequest(model=MODELS[target], prompt=HI, n=1)
        return await image_pb2_grpc.ImageServiceStub(channel).GenerateImages(images, timeout=TIMEOUT).read()
    part = vision_pb2.ContentPart(text=HI)
    vision = vision_pb2.CreateVisionCompletionRequest(
        model=MODELS[target], messages=[vision_pb2.VisionMessage(role="user", parts=[part])]
    )
    stub = vision_pb2_grpc.VisionServiceStub(channel)
    return await stub.CreateVisionCompletion(vision, timeout=TIMEOUT).read()


CALLS: list[tuple[str, Call]] = [
    *(("scheduler", call) for call in (register, acquire, get_status)),
    *(
        (service, call)
        for service in MODEL_SERVICES
        for call in (list_models, load_model, unload_model, infer)
    ),
]
INTRUDERS = ("plaintext", "no client certificate", "certificate of another CA")


def address(mesh: Mesh, target: str) -> str:
    found: str = getattr(mesh, f"{target}_address")
    return found


@pytest.fixture(scope="module")
def app_channels(mesh: Mesh) -> MeshChannels:
    """A client certificate made the way an operator makes one."""
    main(["certs", "client", APP, "--dir", str(mesh.certs_dir)])
    return MeshChannels(mesh.certs_dir, APP)


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another mesh's CA, with a client certificate of its own."""
    folder = tmp_path_factory.mktemp("other-ca")
    create_mesh_certs(folder)
    issue_client_cert(folder, "intruder")
    return folder


def intruder_channel(kind: str, mesh: Mesh, other_ca: Path, target: str) -> grpc.aio.Channel:
    if kind == "plaintext":
        return grpc.aio.insecure_channel(address(mesh, target))
    # Both TLS intruders trust the mesh's CA, so it is the server that turns them away.
    root = (mesh.certs_dir / "ca.pem").read_bytes()
    if kind == "no client certificate":
        credentials = grpc.ssl_channel_credentials(root)
    else:
        key, chain = (other_ca / "intruder-key.pem").read_bytes(), (other_ca / "intruder.pem").read_bytes()
        credentials = grpc.ssl_channel_credentials(root, key, chain)
    return grpc.aio.secure_channel(address(mesh, target), credentials, options=[TARGET_NAME_OVERRIDE])


@pytest.mark.parametrize("kind", INTRUDERS)
@pytest.mark.parametrize(("target", "call"), CALLS, ids=[f"{t}-{c.__name__}" for t, c in CALLS])
async def test_a_caller_without_a_certificate_of_the_mesh_is_refused(
    mesh: Mesh, other_ca: Path, kind: str, target: str, call: Call
) -> None:
    async with intruder_channel(kind, mesh, other_ca, target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(channel, target)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_multai_certs_client_certificate_is_let_in(mesh: Mesh, app_channels: MeshChannels) -> None:
    async with app_channels.aio_channel(mesh.scheduler_address) as channel:
        status = await get_status(channel, "scheduler")
    assert sorted(s.service for s in status.services) == sorted(MODEL_SERVICES)
    for service in MODEL_SERVICES:
        async with app_channels.aio_channel(address(mesh, service)) as channel:
            assert (await list_models(channel, service)).models


@pytest.mark.parametrize("target", ["scheduler", *MODEL_SERVICES])
async def test_reflection_is_off_even_for_a_valid_certificate(
    mesh: Mesh, app_channels: MeshChannels, target: str
) -> None:
    async with app_channels.aio_channel(address(mesh, target)) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            # No request message: the server refuses the call itself, and a message written while it does
            # would fail on the client's side (INTERNAL) instead of showing the refusal.
            await stub.ServerReflectionInfo(iter(()), timeout=TIMEOUT).read()
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_the_client_library_works_with_the_credentials_and_fails_without(
    mesh: Mesh, app_channels: MeshChannels, other_ca: Path
) -> None:
    with MultAI(chat=mesh.chat_address, certs_dir=mesh.certs_dir, client_cert=APP, timeout=120) as client:
        reply = client.chat.completions.create(
            model=MODELS["chat"], messages=[{"role": "user", "content": HI}], max_tokens=3
        )
        assert reply.choices[0].message.content
    async with AsyncMultAI(mesh.audio_address, certs_dir=mesh.certs_dir, client_cert=APP) as async_client:
        assert (await async_client.models.list(timeout=TIMEOUT)).data
    for intruder in (
        MultAI(chat=mesh.chat_address, tls=False),
        MultAI(chat=mesh.chat_address, certs_dir=other_ca, client_cert="intruder"),
    ):
        with pytest.raises(APIConnectionError), intruder:
            intruder.models.list(timeout=TIMEOUT)
