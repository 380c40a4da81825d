"""Typed settings shared by every process: defaults < TOML file (MULTAI_CONFIG) < MULTAI_* env < CLI flags."""

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import psutil
from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_FILE_ENV = "MULTAI_CONFIG"


def default_engine_threads() -> int:
    """Threads for a compute engine: the physical cores this process may run on, as llama.cpp chooses.

    Measured with SmolLM2 on 2 cores (bench/chat_bench.py --threads): 2 threads decoded 1.3-1.5x the
    aggregate tokens/s of 1 thread at 4 and 8 streams, and as fast at one stream; a second hyperthread of a
    core adds no arithmetic and only contends with the mesh's own processes.
    """
    allowed = len(os.sched_getaffinity(0))
    return max(1, min(allowed, psutil.cpu_count(logical=False) or allowed))


def is_loopback(host: str) -> bool:
    """Whether host names only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_models_dir() -> Path:
    """Where models live unless MULTAI_MODELS_DIR says otherwise."""
    return Path.home() / ".local" / "share" / "multai" / "models"


def default_state_dir() -> Path:
    """Where the state database and the mesh's certificates live unless MULTAI_STATE_DIR says otherwise."""
    return Path.home() / ".local" / "share" / "multai" / "state"


class TomlSectionSource(PydanticBaseSettingsSource):
    """Reads the top-level keys and the process's own [section] of the file named by MULTAI_CONFIG."""

    def __init__(self, settings_cls: type[BaseSettings], section: str) -> None:
        super().__init__(settings_cls)
        path = os.environ.get(CONFIG_FILE_ENV)
        data: dict[str, Any] = {}
        if path:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        self._values = {k: v for k, v in data.items() if not isinstance(v, dict)}
        self._values.update(data.get(section, {}))

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._values.items() if k in self.settings_cls.model_fields}


class MultaiSettings(BaseSettings):
    """Settings every process has; subclasses add their own and name their TOML section."""

    model_config = SettingsConfigDict(
        env_prefix="MULTAI_", cli_kebab_case=True, cli_implicit_flags=True, extra="ignore"
    )
    toml_section: ClassVar[str] = ""

    models_dir: Path = Field(default_factory=default_models_dir, description="Folder of model folders.")
    scheduler_address: str = Field("127.0.0.1:50050", description="host:port of the scheduler.")
    log_level: str = Field("INFO", description="Python logging level.")
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Folder of the state database and the mesh's certificates.",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the state database; default: SQLite in the state folder."
    )
    mesh_tls: bool = Field(
        True, description="Mutual TLS on every gRPC connection, with the certificates in the certs folder."
    )
    tracing: Literal["off", "console", "otlp"] = Field(
        "off",
        description="OpenTelemetry spans: off, console (JSON lines on stdout) or otlp "
        "(OTEL_EXPORTER_OTLP_ENDPOINT; needs the tracing extra).",
    )
    certs_dir: Path | None = Field(
        None, description="Folder of the mesh's CA and certificates (multai certs); default: STATE_DIR/certs."
    )

    def mesh_certs_dir(self) -> Path:
        """The certs folder in effect."""
        return self.certs_dir if self.certs_dir is not None else self.state_dir / "certs"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlSectionSource(settings_cls, cls.toml_section)


class GrpcServiceSettings(MultaiSettings):
    """Settings of a gRPC server process."""

    host: str = Field("127.0.0.1", description="Address to bind; 127.0.0.1 keeps the mesh local.")
    port: int = Field(description="Port to bind.")
    shutdown_grace_seconds: float = Field(5.0, description="Time in-flight RPCs get on SIGTERM.")
    grpc_reflection: bool = Field(False, description="Serve gRPC reflection (for grpcurl and debugging).")
    health_port: int = Field(
        0, ge=0, description="A plaintext port serving gRPC health alone (Kubernetes' grpc probes); 0: none."
    )
    max_message_bytes: int = Field(
        32 * 1024 * 1024, ge=4 * 1024 * 1024, description="Largest gRPC message (uploads reach 25 MB)."
    )


class ModelServiceSettings(GrpcServiceSettings):
    """Settings of a modality service, which owns models and takes leases for them."""

    lease_wait_seconds: float = Field(600.0, gt=0, description="Longest wait in the scheduler's queue.")
    scheduler_connect_seconds: float = Field(
        30.0, gt=0, description="Longest wait for the scheduler at start."
    )
    metrics_port: int = Field(0, ge=0, description="Port of the Prometheus /metrics endpoint; 0 disables it.")
    models_poll_seconds: float = Field(
        2.0,
        ge=0,
        description="How often the models folder is checked for models added or removed (`multai models "
        "add`, `remove`), which are then served or dropped without a restart; 0: read it only at start.",
    )
    max_request_seconds: float = Field(
        600.0,
        gt=0,
        description="Longest a call may run, queue wait included; past it the work stops (504 over REST).",
    )


SettingsT = TypeVar("SettingsT", bound=MultaiSettings)


def load_settings(cls: type[SettingsT], argv: list[str] | None, prog: str) -> SettingsT:
    """Builds the process's one settings object; argv=None reads no CLI flags (tests pass values directly)."""
    if argv is None:
        return cls()
    return cls(_cli_parse_args=argv, _cli_prog_name=prog)
