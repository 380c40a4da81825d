"""What the sync and the async client share: addresses, defaults, and stubs over lazily opened channels.

The two clients differ only in how they wait for a call; what they send and how they read the answer is
`multai.client.protocol`'s.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

from multai.audio.v1 import audio_pb2_grpc
from multai.chat.v1 import chat_pb2_grpc
from multai.client.params import Priority, RequestOptions
from multai.client.protocol import (
    CallSettings,
    Metadata,
    Rpc,
    Service,
    call_settings,
    check_params,
    priority_to_pb,
)
from multai.client.settings import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TIMEOUT_SECONDS, ClientSettings
from multai.common.v1 import model_control_pb2_grpc
from multai.edge import SERVICE_HEADER
from multai.image.v1 import image_pb2_grpc
from multai.mesh_tls import MESH_IDENTITY, MeshChannels
from multai.settings import MultaiSettings

STUB_CLASSES: dict[Service, type[Any]] = {
    "chat": chat_pb2_grpc.ChatServiceStub,
    "audio": audio_pb2_grpc.AudioServiceStub,
    "image": image_pb2_grpc.ImageServiceStub,
}
ChannelT = TypeVar("ChannelT")
StubT = TypeVar("StubT")


class ClientBase(ABC, Generic[ChannelT]):
    """Addresses and defaults of a client; channels open on first use and are shared per address."""

    def __init__(
        self,
        target: str | None = None,
        *,
        chat: str | None = None,
        audio: str | None = None,
        image: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        priority: Priority = "normal",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: bool = True,
        certs_dir: Path | str | None = None,
        client_cert: str = MESH_IDENTITY,
    ) -> None:
        """`target` serves every service (an edge proxy); `chat`/`audio`/`image` override it per service.

        `timeout` is the default deadline of a call in seconds and `priority` its default queue level;
        each call may pass its own. The mesh speaks mutual TLS: the client trusts `certs_dir`'s ca.pem
        and presents `client_cert`.pem (`multai certs client NAME`; `mesh`, the mesh's own, by default).
        `certs_dir` defaults to the mesh's default folder; `tls=False` talks plaintext to a mesh started
        with `mesh_tls` off.
        """
        if not any((target, chat, audio, image)):
            raise ValueError("give target= or a service address (chat=, audio=, image=)")
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        priority_to_pb(priority)
        self._addresses: dict[Service, str | None] = {
            "chat": chat or target,
            "audio": audio or target,
            "image": image or target,
        }
        self.timeout = timeout
        self.priority = priority
        self.max_message_bytes = max_message_bytes
        # model_construct reads no environment: the defaults of every mesh process, nothing more.
        folder = Path(certs_dir) if certs_dir else MultaiSettings.model_construct().mesh_certs_dir()
        self.mesh_channels = MeshChannels(folder if tls else None, client_cert)
        self._channels: dict[str, ChannelT] = {}
        self._stubs: dict[tuple[type[Any], str], Any] = {}

    @classmethod
    def from_settings(cls, settings: ClientSettings | None = None) -> Self:
        """A client for the addresses and certificate in settings (env MULTAI_*, the [client] section of
        MULTAI_CONFIG)."""
        settings = settings or ClientSettings()
        priority: Priority = settings.priority  # type: ignore[assignment]
        common: Mapping[str, Any] = {
            "timeout": settings.timeout_seconds,
            "priority": priority,
            "max_message_bytes": settings.max_message_bytes,
            "tls": settings.mesh_tls,
            "certs_dir": settings.mesh_certs_dir(),
            "client_cert": settings.client_cert,
        }
        if settings.edge_address:
            return cls(settings.edge_address, **common)
        return cls(
            chat=settings.chat_address, audio=settings.audio_address, image=settings.image_address, **common
        )

    @property
    def channel_options(self) -> list[tuple[str, int]]:
        """gRPC options every channel gets: uploads and images need more than the 4 MB default."""
        return [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
        ]

    @abstractmethod
    def _open_channel(self, address: str) -> ChannelT:
        """A new channel to address."""

    def _address(self, service: Service) -> str:
        address = self._addresses[service]
        if address is None:
            raise ValueError(f"no address for the {service} service: pass {service}= or target=")
        return address

    def _stub(self, stub_class: type[StubT], address: str) -> StubT:
        key = (stub_class, address)
        if key not in self._stubs:
            if address not in self._channels:
                self._channels[address] = self._open_channel(address)
            self._stubs[key] = stub_class(self._channels[address])  # type: ignore[call-arg]
        stub: StubT = self._stubs[key]
        return stub

    def _call_settings(self, options: RequestOptions) -> CallSettings:
        return call_settings(options, self.timeout, self.priority, self.max_message_bytes)

    def _prepare(self, rpc: Rpc[Any], params: Mapping[str, Any]) -> tuple[Any, Any, CallSettings]:
        """Checks the arguments and builds the request; returns the stub's method, the request, the settings.

        Everything a caller got wrong raises here, before anything is sent.
        """
        check_params(params, rpc.params)
        call = self._call_settings(params)  # type: ignore[arg-type]
        method = getattr(self._stub(STUB_CLASSES[rpc.service], self._address(rpc.service)), rpc.method)
        return method, rpc.build(params, call), call

    def _prepare_listing(
        self, options: Mapping[str, Any]
    ) -> tuple[list[tuple[model_control_pb2_grpc.ModelControlServiceStub, Metadata]], CallSettings]:
        """A ModelControlService stub and call metadata per configured service, and the call's settings.

        Every service serves the same ModelControlService, so each call names its service: an edge in
        front of all of them routes by that header (multai.edge), and a service's own port ignores it.
        """
        check_params(options, RequestOptions)
        call = self._call_settings(options)  # type: ignore[arg-type]
        calls = [
            (
                self._stub(model_control_pb2_grpc.ModelControlServiceStub, address),
                (*call.metadata, (SERVICE_HEADER, service)),
            )
            for service, address in self._addresses.items()
            if address
        ]
        return calls, call

    def _forget_channels(self) -> list[ChannelT]:
        """The open channels, which the caller closes; later calls open new ones."""
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        return channels
