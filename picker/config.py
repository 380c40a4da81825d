"""Settings of the endpoint picker process."""

from typing import ClassVar

from pydantic import Field

from multai.settings import GrpcServiceSettings


class PickerSettings(GrpcServiceSettings):
    """Settings of the endpoint picker (env MULTAI_<NAME>, TOML section [picker], or the flags below)."""

    toml_section: ClassVar[str] = "picker"

    port: int = Field(
        9002, description="Port to bind (the Inference Extension's usual endpoint-picker port)."
    )
    nodes: list[str] = Field(
        default_factory=list,
        description="The nodes, each ENDPOINT=SCHEDULER: the ip:port requests go to (the node's REST bridge) "
        "and its scheduler's host:port.",
    )
    nodes_dns: str = Field(
        "",
        description="A DNS name whose addresses are the nodes (a headless Service), each serving its "
        "bridge on NODE_BRIDGE_PORT and its scheduler on NODE_SCHEDULER_PORT; resolved every "
        "DNS_REFRESH_SECONDS.",
    )
    node_bridge_port: int = Field(8080, description="The bridge's port on each node found by NODES_DNS.")
    node_scheduler_port: int = Field(
        50050, description="The scheduler's port on each node found by NODES_DNS."
    )
    dns_refresh_seconds: float = Field(5.0, gt=0, description="How often NODES_DNS is resolved again.")
    busy_window_seconds: float = Field(
        30.0,
        ge=0,
        description="A resident model used within this counts as busy: the picker never plans to evict it.",
    )
    claim_seconds: float = Field(
        3.0,
        gt=0,
        description="Longest a pick counts on its node while the node's status may not show the request yet.",
    )
    shed_background_waiting: int = Field(
        8, ge=1, description="Background requests get 429 once every node has this many requests waiting."
    )
    shed_normal_waiting: int = Field(
        64, ge=1, description="Normal requests get 429 once every node has this many waiting; urgent never."
    )
    retry_after_seconds: int = Field(2, ge=1, description="Retry-After of a shed request.")
    max_fallbacks: int = Field(
        2, ge=0, description="Further endpoints named after the chosen one, for retries."
    )
    metrics_port: int = Field(0, ge=0, description="Port of the Prometheus /metrics endpoint; 0 disables it.")
    key_tiers: bool = Field(
        True,
        description="Read the API keys' priority tiers from the state database (DATABASE_URL, else the "
        "SQLite file in STATE_DIR, as the bridges do), so that a request naming no priority is shed at the "
        "level its key's bridge will run it at.",
    )
    key_refresh_seconds: float = Field(2.0, gt=0, description="How often the keys' tiers are read again.")
