"""Where the client finds the services and its certificate: env MULTAI_<NAME>, TOML section [client], or
arguments."""

from typing import ClassVar

from pydantic import Field

from multai.settings import MultaiSettings

DEFAULT_TIMEOUT_SECONDS = 600.0
DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024


class ClientSettings(MultaiSettings):
    """The client's settings; the address names and defaults are those the REST bridge reads too."""

    toml_section: ClassVar[str] = "client"

    edge_address: str | None = Field(
        None, description="One host:port for every service (an Envoy edge routing by gRPC service name)."
    )
    chat_address: str = Field("127.0.0.1:50051", description="host:port of the chat service.")
    audio_address: str = Field("127.0.0.1:50052", description="host:port of the audio service.")
    image_address: str = Field("127.0.0.1:50053", description="host:port of the image service.")
    timeout_seconds: float = Field(DEFAULT_TIMEOUT_SECONDS, gt=0, description="Default deadline of a call.")
    max_message_bytes: int = Field(
        DEFAULT_MAX_MESSAGE_BYTES, ge=4 * 1024 * 1024, description="Largest gRPC message (uploads, images)."
    )
    priority: int = Field(1, ge=0, le=2, description="Default queue level: 0 urgent, 1 normal, 2 background.")
    client_cert: str = Field(
        "mesh",
        description="NAME of the certificate the client presents, NAME.pem and NAME-key.pem in the certs "
        "folder (multai certs client NAME); mesh: the mesh's own.",
    )
