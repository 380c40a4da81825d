"""Settings of the REST bridge process."""

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
    max_message_bytes: int = Field(32 * 1024 * 1024, description="Largest gRPC message to a service.")
    request_timeout_seconds: float = Field(600.0, gt=0, description="Deadline of one inference call.")
