"""The `multai` command: serve the mesh, show its status, manage models."""

import argparse
import asyncio
import json
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import grpc
from pydantic import Field

from multai.batch_cli import format_batches
from multai.bundled_models import install_bundled
from multai.certs_cli import add_certs_parser, run_certs_command
from multai.common.v1 import common_pb2
from multai.edge import MODEL_SERVICES, EdgeSpec, ServiceName, envoy_config
from multai.grpc_server import configure_logging
from multai.keys_cli import add_keys_parser, run_keys_command
from multai.mesh_tls import MeshChannels, ensure_mesh_certs
from multai.models_cli import add_models_parser, megabytes, run_models_command
from multai.ports import free_port, reserve
from multai.scheduler.v1 import scheduler_pb2
from multai.scheduler_client import fetch_status
from multai.settings import MultaiSettings, is_loopback, load_settings
from multai.supervisor import Child, Supervisor, grpc_serving, http_ok, python_module

log = logging.getLogger("multai")
DEVICE_NAMES = {common_pb2.DEVICE_CPU: "cpu", common_pb2.DEVICE_GPU: "gpu"}
# Written by `multai serve --nodes N`: each node group's addresses.
NODES_FILE = "nodes.json"


class ServeSettings(MultaiSettings):
    """Settings of `multai serve` (env MULTAI_<NAME>, TOML section [serve], or the flags below)."""

    toml_section: ClassVar[str] = "serve"

    host: str = Field(
        "127.0.0.1", description="Address the REST API binds; the gRPC mesh stays on 127.0.0.1."
    )
    port: int = Field(8080, description="REST API port (OpenAI base_url http://HOST:PORT/v1).")
    scheduler_port: int = Field(50050, description="Scheduler gRPC port.")
    chat_port: int = Field(50051, description="Chat service gRPC port.")
    audio_port: int = Field(50052, description="Audio service gRPC port.")
    image_port: int = Field(50053, description="Image service gRPC port.")
    vision_port: int = Field(50054, description="Vision service gRPC port.")
    metrics_port: int = Field(50059, ge=0, description="Scheduler's Prometheus /metrics port; 0 disables it.")
    chat_metrics_port: int = Field(50061, ge=0, description="Chat service's /metrics port; 0 disables it.")
    audio_metrics_port: int = Field(50062, ge=0, description="Audio service's /metrics port; 0 disables it.")
    image_metrics_port: int = Field(50063, ge=0, description="Image service's /metrics port; 0 disables it.")
    vision_metrics_port: int = Field(
        50064, ge=0, description="Vision service's /metrics port; 0 disables it."
    )
    edge: bool = Field(
        False,
        description="Run the Envoy edge on HOST:PORT in front of the bridge (moved to 127.0.0.1:BRIDGE_PORT) "
        "and the services' gRPC APIs.",
    )
    bridge_port: int = Field(8081, description="The bridge's internal port behind the edge (with --edge).")
    edge_admin_port: int = Field(9901, description="Envoy's admin port on 127.0.0.1 (with --edge).")
    edge_tls: bool = Field(
        False,
        description="Terminate TLS at the edge, with the mesh's certificate (needed for gRPC through it).",
    )
    extra_chat_ports: list[int] = Field(
        default_factory=list,
        description="Ports of more chat-service replicas, balanced by the edge with the first (with --edge).",
    )
    nodes: int = Field(
        1,
        ge=1,
        description="Node groups to run, each with its own scheduler, services and bridge, as separate GPU "
        "nodes would; more than one puts the edge and the endpoint picker in front (a rehearsal of "
        "scale-out on one machine; further nodes take free ports, listed in STATE_DIR/nodes.json).",
    )
    node_services: list[ServiceName] = Field(
        list(MODEL_SERVICES),
        description="The model services each node group runs (requests for the others get 503).",
    )
    picker: bool = Field(
        True,
        description="With the edge, route REST requests through the endpoint picker: with one node for its "
        "shedding of background requests under saturation, with several (where it is always on) for its "
        "choice of node; --no-picker: Envoy balances the bridges by least requests.",
    )
    picker_port: int = Field(9002, description="The endpoint picker's gRPC port on 127.0.0.1.")
    picker_metrics_port: int = Field(0, ge=0, description="The picker's /metrics port; 0 disables it.")
    edge_round_robin_port: int = Field(
        0,
        ge=0,
        description="A second edge listener on 127.0.0.1 balancing the bridges round robin, without the "
        "picker (for comparisons such as bench/scaleout_bench.py); 0: none.",
    )
    install_models: bool = Field(True, description="Install the bundled default models first if missing.")
    ready_timeout_seconds: float = Field(120.0, gt=0, description="Longest wait for a process to be ready.")
    stop_grace_seconds: float = Field(10.0, gt=0, description="Time each process gets to stop on Ctrl-C.")

    def picker_in_front(self) -> bool:
        """Whether the endpoint picker decides each REST request's node: with the edge, or several nodes."""
        return (self.edge and self.picker) or self.nodes > 1

    def edge_in_front(self) -> bool:
        """Whether Envoy serves HOST:PORT: asked for, or needed by several nodes."""
        return self.edge or self.nodes > 1


@dataclass(frozen=True)
class NodePorts:
    """The ports of one node group: its scheduler, services and bridge, each with its metrics port."""

    scheduler: int
    scheduler_metrics: int
    services: dict[str, int]
    service_metrics: dict[str, int]
    bridge: int

    @classmethod
    def first(cls, settings: "ServeSettings") -> "NodePorts":
        """The first node's, from the settings (the bridge behind the edge when there is one)."""
        return cls(
            settings.scheduler_port,
            settings.metrics_port,
            {name: getattr(settings, f"{name}_port") for name in MODEL_SERVICES},
            {name: getattr(settings, f"{name}_metrics_port") for name in MODEL_SERVICES},
            settings.bridge_port if settings.edge_in_front() else settings.port,
        )

    @classmethod
    def free(cls) -> "NodePorts":
        """A further node's, free ones chosen now (`nodes.json` in the state folder lists them)."""
        return cls(
            free_port(),
            free_port(),
            {name: free_port() for name in MODEL_SERVICES},
            {name: free_port() for name in MODEL_SERVICES},
            free_port(),
        )


def mesh_children(settings: ServeSettings) -> list[Child]:
    """The processes of the local mesh, in start order: each node group, then the picker and the edge."""
    if settings.nodes > 1:
        # Further nodes' free ports must not be ones the settings already give the first node or the edge.
        for name, value in settings.model_dump().items():
            if name == "port" or name.endswith("_port"):
                reserve([value])
            elif name.endswith("_ports"):
                reserve(value)
    nodes = [NodePorts.first(settings), *(NodePorts.free() for _ in range(settings.nodes - 1))]
    children = [child for index, ports in enumerate(nodes) for child in node_children(settings, index, ports)]
    services = set(settings.node_services)
    replicas: dict[str, list[str]] = {
        name: [f"127.0.0.1:{ports.services[name]}" for ports in nodes] if name in services else []
        for name in MODEL_SERVICES
    }
    replicas["chat"] += [f"127.0.0.1:{port}" for port in settings.extra_chat_ports]
    bridges = [f"127.0.0.1:{ports.bridge}" for ports in nodes]
    if settings.nodes > 1:
        _write_nodes_file(settings, nodes)
    if settings.picker_in_front():
        children.append(
            picker_child(
                settings, [(b, f"127.0.0.1:{p.scheduler}") for b, p in zip(bridges, nodes, strict=True)]
            )
        )
    if settings.edge_in_front():
        children.append(edge_child(settings, bridges, replicas))
    return children


def _common_arguments(settings: ServeSettings) -> list[str]:
    common = ["--models-dir", str(settings.models_dir), "--log-level", settings.log_level]
    common += ["--state-dir", str(settings.state_dir), "--certs-dir", str(settings.mesh_certs_dir())]
    common.append("--mesh-tls" if settings.mesh_tls else "--no-mesh-tls")
    return [*common, "--tracing", settings.tracing]


def node_children(settings: ServeSettings, index: int, ports: NodePorts) -> list[Child]:
    """One node group: its scheduler, its model services and the bridge in front of them."""
    prefix = "" if index == 0 else f"node{index + 1}-"
    scheduler = f"127.0.0.1:{ports.scheduler}"
    common = _common_arguments(settings)
    channels = MeshChannels.from_settings(settings)
    running = [name for name in MODEL_SERVICES if name in settings.node_services]

    def model_service(name: str, port: int, metrics_port: int, child_name: str) -> Child:
        return Child(
            child_name,
            python_module(
                f"services.{name}",
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
                "--scheduler-address",
                scheduler,
                *common,
            ),
            lambda: grpc_serving(channels, f"127.0.0.1:{port}"),
        )

    services = [
        model_service(name, ports.services[name], ports.service_metrics[name], f"{prefix}{name}")
        for name in running
    ]
    # Extra replicas export no metrics port of their own: the edge's statistics count their requests.
    extra_chats = (
        [
            model_service("chat", port, 0, f"chat-{number}")
            for number, port in enumerate(settings.extra_chat_ports, 2)
        ]
        if index == 0
        else []
    )
    # A service this node does not run is at port 0, which refuses at once: its requests get 503.
    addresses = [
        argument
        for name in MODEL_SERVICES
        for argument in (f"--{name}-address", f"127.0.0.1:{ports.services[name] if name in running else 0}")
    ]
    bridge_arguments = [*addresses, "--services", json.dumps(running), "--scheduler-address", scheduler]
    return [
        Child(
            f"{prefix}scheduler",
            python_module(
                "scheduler",
                "--port",
                str(ports.scheduler),
                "--metrics-port",
                str(ports.scheduler_metrics),
                *common,
            ),
            lambda: grpc_serving(channels, scheduler),
        ),
        *services,
        *extra_chats,
        bridge_child(settings, f"{prefix}rest_bridge", ports.bridge, [*bridge_arguments, *common]),
    ]


def _write_nodes_file(settings: ServeSettings, nodes: list[NodePorts]) -> None:
    """Where each node group listens, for `multai status --scheduler-address`, benchmarks and tests."""
    listing = [
        {
            "node": number,
            "endpoint": f"127.0.0.1:{ports.bridge}",
            "scheduler": f"127.0.0.1:{ports.scheduler}",
            "scheduler_metrics": f"http://127.0.0.1:{ports.scheduler_metrics}/metrics",
            "services": {name: f"127.0.0.1:{ports.services[name]}" for name in settings.node_services},
            "service_metrics": {
                name: f"http://127.0.0.1:{ports.service_metrics[name]}/metrics"
                for name in settings.node_services
                if ports.service_metrics[name]
            },
        }
        for number, ports in enumerate(nodes, 1)
    ]
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / NODES_FILE).write_text(json.dumps(listing, indent=1))


def bridge_child(settings: ServeSettings, name: str, port: int, arguments: list[str]) -> Child:
    """A REST bridge: public on HOST:PORT, or behind the edge on 127.0.0.1."""
    host = "127.0.0.1" if settings.edge_in_front() else settings.host
    # Behind a public edge the bridge itself is on loopback, yet every request comes from outside.
    public = settings.edge_in_front() and not is_loopback(settings.host)
    return Child(
        name,
        python_module(
            "rest_bridge",
            "--host",
            host,
            "--port",
            str(port),
            *(["--require-keys"] if public else []),
            *arguments,
        ),
        lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
    )


def picker_child(settings: ServeSettings, nodes: list[tuple[str, str]]) -> Child:
    """The endpoint picker over the node groups, ready when its gRPC health says so (a node reported)."""
    address = f"127.0.0.1:{settings.picker_port}"
    channels = MeshChannels.from_settings(settings)
    argv = python_module(
        "picker",
        "--port",
        str(settings.picker_port),
        "--metrics-port",
        str(settings.picker_metrics_port),
        "--nodes",
        json.dumps([f"{endpoint}={scheduler}" for endpoint, scheduler in nodes]),
        *_common_arguments(settings),
    )
    return Child("picker", argv, lambda: grpc_serving(channels, address))


def edge_child(settings: ServeSettings, bridges: list[str], service_replicas: dict[str, list[str]]) -> Child:
    """Envoy on HOST:PORT, configured by multai.edge and ready when its admin says so."""
    spec = EdgeSpec(
        listen_host=settings.host,
        listen_port=settings.port,
        admin_port=settings.edge_admin_port,
        bridges=bridges,
        services=service_replicas,
        certs_dir=settings.mesh_certs_dir(),
        tls=settings.edge_tls,
        picker=f"127.0.0.1:{settings.picker_port}" if settings.picker_in_front() else None,
        round_robin_port=settings.edge_round_robin_port,
    )
    config = settings.state_dir / "envoy.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(envoy_config(spec), indent=1))
    envoy = str(Path(sys.executable).with_name("envoy"))
    # Several edges may run on one machine (tests, benchmarks); hot restart's shared memory would clash.
    argv = [envoy, "-c", str(config), "--log-level", "warning", "--disable-hot-restart"]
    return Child("edge", argv, lambda: http_ok(f"http://127.0.0.1:{settings.edge_admin_port}/ready"))


async def serve(settings: ServeSettings) -> None:
    """Runs the mesh until Ctrl-C or SIGTERM."""
    if settings.install_models:
        install_bundled(settings.models_dir)
    if settings.mesh_tls:
        ensure_mesh_certs(settings.mesh_certs_dir())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    supervisor = Supervisor(
        mesh_children(settings), settings.ready_timeout_seconds, settings.stop_grace_seconds
    )
    scheme = "https" if settings.edge_in_front() and settings.edge_tls else "http"
    log.info("REST API on %s://%s:%d/v1", scheme, settings.host, settings.port)
    await supervisor.run(stop)


def format_status(status: scheduler_pb2.GetStatusResponse) -> str:
    """The scheduler's state as tables, like `ollama ps`."""
    lines = ["SERVICE      PID       ID"]
    lines += [f"{s.service:<12} {s.pid:<9} {s.service_id}" for s in status.services]
    lines += ["", "MODEL                         SERVICE  DEVICE  SIZE       SLOTS  IDLE"]
    lines += [
        f"{r.model:<29} {r.service:<8} {DEVICE_NAMES.get(r.device, '?'):<7} {megabytes(r.size_bytes):<10} "
        f"{f'{r.slots_in_use}/{max(r.slots, 1)}':<6} "
        f"{'busy' if r.idle_seconds == 0 else f'{r.idle_seconds:.0f}s'}"
        for r in status.resident_models
    ]
    lines += [
        "",
        "LEASE         REQUEST                       MODEL                    DEVICE  HELD    EXPIRES",
    ]
    for lease in status.leases:
        held = f"{lease.held_seconds:.1f}s"
        lines.append(
            f"{lease.lease_id:<13} {lease.request_id[:29]:<29} {lease.model:<24} "
            f"{DEVICE_NAMES.get(lease.device, '?'):<7} {held:<7} in {lease.expires_in_seconds:.0f}s"
        )
    lines += ["", "QUEUE  REQUEST                       MODEL                    WAITED"]
    lines += [
        f"{w.level:<6} {w.request_id[:29]:<29} {w.model:<24} {w.waited_seconds:.1f}s" for w in status.queue
    ]
    lines += ["", "DEVICE                  USED        BUDGET      LEASES"]
    lines += [
        f"{d.name:<23} {megabytes(d.used_bytes):<11} {megabytes(d.budget_bytes):<11} {d.active_leases}"
        for d in status.devices
    ]
    lines += ["", f"grants {status.total_grants}, evictions {status.total_evictions}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multai", description="Self-hosted OpenAI-compatible inference mesh."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve",
        add_help=False,
        help="start scheduler, services and REST bridge (multai serve --help for options)",
    )
    status = commands.add_parser("status", help="queue, leases, resident models and memory of the scheduler")
    status.add_argument("--scheduler-address", help="host:port of the scheduler (default: settings)")
    status.add_argument(
        "--certs-dir", help="certs folder (default: MULTAI_CERTS_DIR, else MULTAI_STATE_DIR/certs)"
    )
    status.add_argument("--models-dir", help="folder of model folders (default: MULTAI_MODELS_DIR)")
    add_models_parser(commands)
    add_keys_parser(commands)
    add_certs_parser(commands)
    edge = commands.add_parser("edge", help="the Envoy edge's configuration")
    edge_commands = edge.add_subparsers(dest="edge_command", required=True)
    config = edge_commands.add_parser(
        "config", help="print Envoy's configuration for given replicas (k8s/base/envoy/envoy.json is this)"
    )
    config.add_argument("--listen", default="0.0.0.0:8080", help="HOST:PORT Envoy listens on")
    config.add_argument("--admin-port", type=int, default=9901, help="Envoy's admin port on 127.0.0.1")
    config.add_argument("--bridge", nargs="+", required=True, help="the REST bridge's HOST:PORT replicas")
    for name in MODEL_SERVICES:
        config.add_argument(
            f"--{name}", nargs="+", required=True, help=f"the {name} service's HOST:PORT replicas"
        )
    config.add_argument("--edge-certs-dir", required=True, help="where Envoy finds the mesh's certificates")
    config.add_argument("--tls", action="store_true", help="terminate TLS at the edge")
    config.add_argument(
        "--picker",
        help="HOST:PORT of the endpoint picker: each REST request goes to the bridge it names (one per node)",
    )
    return parser


def edge_config_text(args: argparse.Namespace) -> str:
    """`multai edge config`'s output: Envoy's configuration as indented JSON."""
    host, _, port = args.listen.rpartition(":")
    spec = EdgeSpec(
        listen_host=host,
        listen_port=int(port),
        admin_port=args.admin_port,
        bridges=args.bridge,
        services={name: getattr(args, name) for name in MODEL_SERVICES},
        certs_dir=Path(args.edge_certs_dir),
        tls=args.tls,
        picker=args.picker,
    )
    return json.dumps(envoy_config(spec), indent=2) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "serve":
        settings = load_settings(ServeSettings, rest, "multai serve")
        configure_logging(settings.log_level)
        asyncio.run(serve(settings))
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    overrides = {k: v for k, v in vars(args).items() if k in MultaiSettings.model_fields and v is not None}
    settings_common = MultaiSettings(**overrides)
    configure_logging("WARNING")
    if args.command == "status":
        try:
            channels = MeshChannels.from_settings(settings_common)
            status = asyncio.run(fetch_status(channels, settings_common.scheduler_address))
        except grpc.aio.AioRpcError as exc:
            sys.exit(f"scheduler at {settings_common.scheduler_address} did not answer: {exc.code().name}")
        except FileNotFoundError as exc:
            sys.exit(str(exc))
        print(format_status(status))
        print("\n" + format_batches(settings_common))
    elif args.command == "keys":
        run_keys_command(args)
    elif args.command == "certs":
        run_certs_command(args)
    elif args.command == "edge":
        sys.stdout.write(edge_config_text(args))
    else:
        run_models_command(args, settings_common)


if __name__ == "__main__":
    main()
