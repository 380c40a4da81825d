"""Settings of the REST bridge process."""

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from multai.settings import MultaiSettings


class BridgeSettings(MultaiSettings):
    """Settings of the REST bridge (env MULTAI_<NAME>, TOML section [bridge], or the flags below)."""

    toml_section: ClassVar[str] = "bridge"

    host: str = Field("127.0.0.1", description="Address to bind; 127.0.0.1 keeps the API local.")
    port: int = Field(8080, description="HTTP port.")
    chat_address: str = Field("127.0.0.1:50051", description="host:port of the chat service.")
    audio_address: str = Field("127.0.0.1:50052", description="host:port of the audio service.")
    image_address: str = Field("127.0.0.1:50053", description="host:port of the image service.")
    vision_address: str = Field("127.0.0.1:50054", description="host:port of the vision service.")
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
    request_timeout_seconds: float = Field(600.0, gt=0, description="Deadline of one inference call.")
