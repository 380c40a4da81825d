"""The Envoy edge's configuration, from one generator for `multai serve --edge` and for Kubernetes.

One listener serves both APIs at one address:
- HTTP `/v1/*` (and everything else that is not gRPC) goes to the REST bridge replicas;
- gRPC `/multai.<service>.v1.*` goes to that service's replicas; the services' shared
  `multai.common.v1.ModelControlService` and gRPC health go where the `x-multai-service` header says, which
  the client library sets, so that one edge address lists every service's models.

Envoy balances each request to the replica with the fewest in flight, retries a request that failed before
any response byte (connection refused or reset, gRPC UNAVAILABLE), ejects replicas that keep failing and
health-checks every replica (gRPC health for the services, /healthz for the bridge). Upstream it speaks the
mesh's mutual TLS with the mesh's certificate. gRPC through the edge therefore needs a caller certificate
from the mesh's CA: only a TLS edge can see one, so on a plaintext edge the gRPC routes answer 403
(PERMISSION_DENIED) and only the REST API, behind its API keys, is served.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from multai.mesh_tls import CA_IDENTITY, MESH_IDENTITY, MESH_SERVER_NAME, cert_file, key_file

ServiceName = Literal["chat", "audio", "image", "vision"]
MODEL_SERVICES: tuple[ServiceName, ...] = ("chat", "audio", "image", "vision")
SERVICE_HEADER = "x-multai-service"
BRIDGE_CLUSTER = "bridge"
PICKER_CLUSTER = "picker"
ROUND_ROBIN_CLUSTER = "bridge_round_robin"
# The Gateway API Inference Extension's names for the endpoint picker's answer.
DESTINATION_HEADER = "x-gateway-destination-endpoint"
DESTINATION_NAMESPACE = "envoy.lb"
RETRY_ON = "connect-failure,refused-stream,reset,unavailable"
RETRIES = 3
TYPE = "type.googleapis.com/envoy.extensions"


@dataclass(frozen=True)
class EdgeSpec:
    """Where the edge listens and what stands behind it (host:port replicas per cluster)."""

    listen_host: str
    listen_port: int
    admin_port: int
    bridges: Sequence[str]
    services: Mapping[str, Sequence[str]]
    certs_dir: Path
    # Terminate TLS at the edge (with the mesh's certificate unless tls_cert/tls_key name others).
    tls: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Larger requests get 413 at the edge, before any replica sees them (the bridge's own limit is 30 MiB).
    max_request_bytes: int = 32 * 1024 * 1024
    # host:port of the endpoint picker: then each REST request goes to the bridge it names (one per node),
    # and the bridges are the nodes' own.
    picker: str | None = None
    # A second listener, on 127.0.0.1, balancing the same bridges round robin (for comparisons); 0: none.
    round_robin_port: int = 0


def _endpoints(cluster: str, replicas: Sequence[str]) -> dict[str, Any]:
    endpoints = []
    for replica in replicas:
        host, _, port = replica.rpartition(":")
        address = {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}
        endpoints.append({"endpoint": {"address": address}})
    return {"cluster_name": cluster, "endpoints": [{"lb_endpoints": endpoints}]}


def _certificate(cert: Path, key: Path) -> dict[str, Any]:
    return {"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}


def _upstream_mtls(certs_dir: Path) -> dict[str, Any]:
    """The mesh's mutual TLS towards the services, checking their name as MeshChannels does."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": f"{TYPE}.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": MESH_SERVER_NAME,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [
                    _certificate(cert_file(certs_dir, MESH_IDENTITY), key_file(certs_dir, MESH_IDENTITY))
                ],
                "validation_context": {
                    "trusted_ca": {"filename": str(cert_file(certs_dir, CA_IDENTITY))},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": MESH_SERVER_NAME}}
                    ],
                },
            },
        },
    }


def _downstream_tls(spec: EdgeSpec) -> dict[str, Any]:
    """TLS for callers: a certificate from the mesh's CA is asked for, not required (REST has none)."""
    cert = spec.tls_cert or cert_file(spec.certs_dir, MESH_IDENTITY)
    key = spec.tls_key or key_file(spec.certs_dir, MESH_IDENTITY)
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": f"{TYPE}.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": False,
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [_certificate(cert, key)],
                "validation_context": {
                    "trusted_ca": {"filename": str(cert_file(spec.certs_dir, CA_IDENTITY))}
                },
            },
        },
    }


def _service_cluster(name: str, replicas: Sequence[str], certs_dir: Path) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STRICT_DNS",
        "connect_timeout": "2s",
        "lb_policy": "LEAST_REQUEST",
        "load_assignment": _endpoints(name, replicas),
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{TYPE}.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "transport_socket": _upstream_mtls(certs_dir),
        "health_checks": [
            {
                # A replica busy with inference on few cores answers slowly, not never.
                "timeout": "5s",
                "interval": "5s",
                "unhealthy_threshold": 3,
                "healthy_threshold": 1,
                "grpc_health_check": {},
            }
        ],
        "outlier_detection": _outlier_detection(),
        "circuit_breakers": _circuit_breakers(),
    }


def _policy(name: str, config_type: str, **config: Any) -> dict[str, Any]:
    typed = {"@type": f"{TYPE}.load_balancing_policies.{config_type}", **config}
    return {"policies": [{"typed_extension_config": {"name": name, "typed_config": typed}}]}


def _picked_host_policy() -> dict[str, Any]:
    """The host the picker named: its header, else its `envoy.lb` metadata; a retry takes the next in the
    list. Unlike an ORIGINAL_DST cluster, only the cluster's own hosts can be named, whoever set the
    header."""
    return _policy(
        "envoy.load_balancing_policies.override_host",
        "override_host.v3.OverrideHost",
        override_host_sources=[
            {"header": DESTINATION_HEADER},
            {"metadata": {"key": DESTINATION_NAMESPACE, "path": [{"key": DESTINATION_HEADER}]}},
        ],
        fallback_policy=_policy(
            "envoy.load_balancing_policies.least_request", "least_request.v3.LeastRequest"
        ),
    )


def _bridge_cluster(name: str, replicas: Sequence[str], balancing: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STRICT_DNS",
        "connect_timeout": "2s",
        **balancing,
        "load_assignment": _endpoints(name, replicas),
        "health_checks": [
            {
                "timeout": "2s",
                "interval": "5s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                # The bridge answers only Host names it knows (against DNS rebinding); loopback is one.
                "http_health_check": {"path": "/healthz", "host": "localhost"},
            }
        ],
        "outlier_detection": _outlier_detection(),
        "circuit_breakers": _circuit_breakers(),
    }


def _circuit_breakers() -> dict[str, Any]:
    # Envoy allows 3 retries in flight per cluster by default: when a replica dies, every request queued
    # on it is retried at once, and the fourth would be lost.
    return {"thresholds": [{"priority": "DEFAULT", "max_retries": 1024}]}


def _outlier_detection() -> dict[str, Any]:
    # A replica that fails requests in a row sits out a while; at least half the replicas always serve.
    return {
        "consecutive_5xx": 5,
        "consecutive_gateway_failure": 3,
        "interval": "5s",
        "base_ejection_time": "15s",
        "max_ejection_percent": 50,
    }


def _route(match: dict[str, Any], cluster: str, grpc: bool) -> dict[str, Any]:
    route: dict[str, Any] = {
        "match": match,
        "route": {
            "cluster": cluster,
            # Generations stream for minutes; the services and the bridge set their own deadlines.
            "timeout": "0s",
            "retry_policy": {
                "retry_on": RETRY_ON,
                "num_retries": RETRIES,
                # A retry goes to another replica than the one that just failed, while there is one.
                "retry_host_predicate": [
                    {
                        "name": "envoy.retry_host_predicates.previous_hosts",
                        "typed_config": {
                            "@type": f"{TYPE}.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                        },
                    }
                ],
                "host_selection_retry_max_attempts": 5,
            },
        },
    }
    if grpc:
        route["typed_per_filter_config"] = {
            "envoy.filters.http.rbac": {
                "@type": f"{TYPE}.filters.http.rbac.v3.RBACPerRoute",
                "rbac": {
                    "rules": {
                        "action": "ALLOW",
                        "policies": {
                            "caller-with-a-mesh-certificate": {
                                "permissions": [{"any": True}],
                                # A bare `authenticated` matches any TLS connection, with a peer
                                # certificate or without; a non-empty principal needs one (which the
                                # listener has checked against the mesh's CA).
                                "principals": [
                                    {"authenticated": {"principal_name": {"safe_regex": {"regex": ".+"}}}}
                                ],
                            }
                        },
                    }
                },
            }
        }
    return route


def _routes(bridge_cluster: str, picker: bool) -> list[dict[str, Any]]:
    """gRPC routes to the services, then everything else to the bridges (as the picker says, if any)."""
    routes = [_route({"prefix": f"/multai.{name}.v1."}, name, grpc=True) for name in MODEL_SERVICES]
    for prefix in ("/multai.common.v1.", "/grpc.health.v1."):
        for name in MODEL_SERVICES:
            header = {"name": SERVICE_HEADER, "string_match": {"exact": name}}
            routes.append(_route({"prefix": prefix, "headers": [header]}, name, grpc=True))
    if picker:
        # The picker decides REST requests only; on the gRPC routes its filter stays out of the way.
        for route in routes:
            route.setdefault("typed_per_filter_config", {})["envoy.filters.http.ext_proc"] = (
                _ext_proc_disabled()
            )
    # Batch input files reach 200 MB, past the buffer's limit: they stream to any bridge, which checks the
    # size as it reads (the picker has no model to decide on, and the override_host policy falls back).
    uploads = _route({"path_separated_prefix": "/v1/files"}, bridge_cluster, grpc=False)
    uploads["typed_per_filter_config"] = {
        "envoy.filters.http.buffer": {
            "@type": f"{TYPE}.filters.http.buffer.v3.BufferPerRoute",
            "disabled": True,
        },
        **({"envoy.filters.http.ext_proc": _ext_proc_disabled()} if picker else {}),
    }
    routes.append(uploads)
    routes.append(_route({"prefix": "/"}, bridge_cluster, grpc=False))
    return routes


def _ext_proc_disabled() -> dict[str, Any]:
    return {"@type": f"{TYPE}.filters.http.ext_proc.v3.ExtProcPerRoute", "disabled": True}


# No request or response bodies, ever: prompts and audio stay out of the logs.
ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%" %RESPONSE_CODE% grpc=%GRPC_STATUS% '
    "%RESPONSE_FLAGS% in=%BYTES_RECEIVED% out=%BYTES_SENT% %DURATION%ms upstream=%UPSTREAM_HOST% "
    "id=%REQ(X-REQUEST-ID)%\n"
)


# Status: (OpenAI error type, code, message) of what Envoy itself answers.
EDGE_ERRORS = {
    413: ("invalid_request_error", "request_too_large", "the request body is larger than the edge's limit"),
    503: (
        "server_error",
        "upstream_unavailable",
        "no replica behind the edge could answer (%RESPONSE_CODE_DETAILS%)",
    ),
}


def _error_json(status: int, error_type: str, code: str, message: str) -> dict[str, Any]:
    error = {"message": message, "type": error_type, "param": None, "code": code}
    return {
        "filter": {
            "status_code_filter": {
                "comparison": {
                    "op": "EQ",
                    "value": {"default_value": status, "runtime_key": f"edge.json_{status}"},
                }
            }
        },
        "body_format_override": {"json_format": {"error": error}},
    }


def _ext_proc_filter() -> dict[str, Any]:
    """The endpoint picker, asked about every REST request with its headers and buffered body."""
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": f"{TYPE}.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": PICKER_CLUSTER}, "timeout": "5s"},
            # No picker, no routing: a request is refused rather than sent where its model is not.
            "failure_mode_allow": False,
            # Deciding takes well under a millisecond; the margin is for a machine busy with inference.
            "message_timeout": "2s",
            "processing_mode": {
                "request_header_mode": "SEND",
                "request_body_mode": "BUFFERED",
                "request_trailer_mode": "SKIP",
                "response_header_mode": "SKIP",
                "response_body_mode": "NONE",
                "response_trailer_mode": "SKIP",
            },
            "metadata_options": {"receiving_namespaces": {"untyped": [DESTINATION_NAMESPACE]}},
        },
    }


def _picker_cluster(address: str, certs_dir: Path) -> dict[str, Any]:
    cluster = _service_cluster(PICKER_CLUSTER, [address], certs_dir)
    # One picker: ejecting it would only turn every request into a 503 sooner.
    del cluster["outlier_detection"]
    return cluster


def _connection_manager(spec: EdgeSpec, bridge_cluster: str, picker: bool) -> dict[str, Any]:
    buffer = {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": f"{TYPE}.filters.http.buffer.v3.Buffer",
            "max_request_bytes": spec.max_request_bytes,
        },
    }
    # No rules here: only the gRPC routes' own rules apply.
    rbac = {"name": "envoy.filters.http.rbac", "typed_config": {"@type": f"{TYPE}.filters.http.rbac.v3.RBAC"}}
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": f"{TYPE}.filters.http.router.v3.Router"},
    }
    return {
        "@type": f"{TYPE}.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        "stream_idle_timeout": "0s",
        "request_timeout": "0s",
        "access_log": [
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": {
                    "@type": f"{TYPE}.access_loggers.stream.v3.StdoutAccessLog",
                    "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
                },
            }
        ],
        # The edge's own refusals (413, 503) in OpenAI's error format, as the bridge answers.
        "local_reply_config": {
            "mappers": [_error_json(status, *reply) for status, reply in EDGE_ERRORS.items()]
        },
        "http_filters": [buffer, *([_ext_proc_filter()] if picker else []), rbac, router],
        "route_config": {
            "name": "edge",
            "virtual_hosts": [{"name": "mesh", "domains": ["*"], "routes": _routes(bridge_cluster, picker)}],
        },
    }


def _listener(
    name: str, host: str, port: int, manager: dict[str, Any], tls: dict[str, Any] | None
) -> dict[str, Any]:
    chain: dict[str, Any] = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]
    }
    if tls is not None:
        chain["transport_socket"] = tls
    return {
        "name": name,
        "address": {"socket_address": {"address": host, "port_value": port}},
        "filter_chains": [chain],
    }


def envoy_config(spec: EdgeSpec) -> dict[str, Any]:
    """Envoy's bootstrap configuration (JSON, which Envoy reads as YAML too)."""
    picker = spec.picker is not None
    tls = _downstream_tls(spec) if spec.tls else None
    manager = _connection_manager(spec, BRIDGE_CLUSTER, picker)
    listeners = [_listener("edge", spec.listen_host, spec.listen_port, manager, tls)]
    balancing = {"load_balancing_policy": _picked_host_policy()} if picker else {"lb_policy": "LEAST_REQUEST"}
    clusters = [_bridge_cluster(BRIDGE_CLUSTER, spec.bridges, balancing)]
    if spec.round_robin_port:
        plain = _connection_manager(spec, ROUND_ROBIN_CLUSTER, picker=False)
        listeners.append(_listener("round_robin", "127.0.0.1", spec.round_robin_port, plain, tls))
        clusters.append(_bridge_cluster(ROUND_ROBIN_CLUSTER, spec.bridges, {"lb_policy": "ROUND_ROBIN"}))
    if spec.picker is not None:
        clusters.append(_picker_cluster(spec.picker, spec.certs_dir))
    clusters += [_service_cluster(name, spec.services[name], spec.certs_dir) for name in MODEL_SERVICES]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": spec.admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
