"""Settings of the REST bridge process."""

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from multai.edge import MODEL_SERVICES, ServiceName
from multai.settings import MultaiSettings, is_loopback
from rest_bridge.guards import LOOPBACK_HOSTS

# Binding these serves every interface, so no one name of the server follows from them.
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


class BridgeSettings(MultaiSettings):
    """Settings of the REST bridge (env MULTAI_<NAME>, TOML section [bridge], or the flags below)."""

    toml_section: ClassVar[str] = "bridge"

    host: str = Field("127.0.0.1", description="Address to bind; 127.0.0.1 keeps the API local.")
    port: int = Field(8080, description="HTTP port.")
    chat_address: str = Field("127.0.0.1:50051", description="host:port of the chat service.")
    audio_address: str = Field("127.0.0.1:50052", description="host:port of the audio service.")
    image_address: str = Field("127.0.0.1:50053", description="host:port of the image service.")
    vision_address: str = Field("127.0.0.1:50054", description="host:port of the vision service.")
    services: list[ServiceName] = Field(
        list(MODEL_SERVICES),
        description="The services that run behind this bridge: the ones it lists models of and needs for "
        "/readyz (a node that runs only some; requests for the others get 503).",
    )
    image_store_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "multai" / "images",
        description="Folder of generated images served by URL.",
    )
    image_url_ttl_seconds: float = Field(
        3600.0, gt=0, description="How long a generated image's URL works before the file is deleted."
    )
    public_base_url: str | None = Field(
        None, description="Base of image URLs (e.g. https://ai.example.com) when behind a proxy."
    )
    remote_image_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts whose http(s) image URLs may be fetched; none by default (no egress).",
    )
    max_image_input_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest input image.")
    remote_image_timeout_seconds: float = Field(10.0, gt=0, description="Deadline of one image fetch.")
    max_message_bytes: int = Field(32 * 1024 * 1024, description="Largest gRPC message to a service.")
    max_request_body_bytes: int = Field(
        30 * 1024 * 1024,
        gt=0,
        description="Largest request body (413 past it); below max_message_bytes, which also holds the "
        "request's other fields. OpenAI's own limit on uploads is 25 MB.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names the API answers to, beside loopback names and the bound address "
        "(against DNS rebinding); '*' allows any, e.g. behind a proxy that checks them.",
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Serve a non-loopback address without API keys (only behind a proxy that authenticates).",
    )
    require_keys: bool = Field(
        False,
        description="Need a key on every /v1 route even while none exists (multai serve --edge sets it when "
        "the edge is public and this bridge is behind it on loopback).",
    )
    cors_allow_origins: list[str] = Field(
        default_factory=list,
        description="Origins browsers may call the API from; none (CORS off) by default.",
    )
    request_timeout_seconds: float = Field(600.0, gt=0, description="Deadline of one inference call.")
    file_retention_seconds: int = Field(
        30 * 24 * 3600,
        gt=0,
        description="How long uploaded files and batches' output and error files live unless the request "
        "says otherwise (OpenAI's 30 days).",
    )
    batch_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a batch line stays claimed by its worker without renewal: a line whose worker "
        "died runs again once it lapses.",
    )

    def answered_hosts(self) -> list[str]:
        """The Host names the API answers to: loopback, the bound address unless a wildcard, allowed_hosts."""
        bound = [] if self.host in WILDCARD_ADDRESSES else [self.host]
        return [*LOOPBACK_HOSTS, *bound, *self.allowed_hosts]

    def keys_required(self) -> bool:
        """Whether /v1 routes need a key even while none exists: bound beyond loopback, unless allowed, or
        told so (behind a public edge)."""
        return self.require_keys or not (self.allow_unauthenticated or is_loopback(self.host))
