"""The edge's configuration with the endpoint picker: what Envoy is told, and that Envoy accepts it."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from multai.edge import MODEL_SERVICES, EdgeSpec, envoy_config
from multai.mesh_tls import ensure_mesh_certs


def picked_config(certs: Path) -> dict[str, Any]:
    spec = EdgeSpec(
        "127.0.0.1",
        18080,
        19901,
        ["10.0.0.1:8081", "10.0.0.2:8081"],
        {name: ["10.0.0.1:1"] for name in MODEL_SERVICES},
        certs,
        picker="127.0.0.1:9002",
        round_robin_port=18090,
    )
    return envoy_config(spec)


def manager(listener: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def test_rest_requests_ask_the_picker_and_go_where_it_says(tmp_path: Path) -> None:
    config = picked_config(tmp_path)
    edge, round_robin = config["static_resources"]["listeners"]
    filters = {f["name"]: f["typed_config"] for f in manager(edge)["http_filters"]}
    ext_proc = filters["envoy.filters.http.ext_proc"]
    assert ext_proc["failure_mode_allow"] is False
    assert ext_proc["grpc_service"]["envoy_grpc"]["cluster_name"] == "picker"
    assert ext_proc["processing_mode"]["request_body_mode"] == "BUFFERED"
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    policy = clusters["bridge"]["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert policy["name"] == "envoy.load_balancing_policies.override_host"
    sources = policy["typed_config"]["override_host_sources"]
    assert sources[0] == {"header": "x-gateway-destination-endpoint"}
    assert sources[1]["metadata"]["key"] == "envoy.lb"
    routes = manager(edge)["route_config"]["virtual_hosts"][0]["routes"]
    # gRPC goes to the services as before; only the REST catch-all is the picker's.
    for route in routes[:-1]:
        assert route["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True
    assert "envoy.filters.http.ext_proc" not in routes[-1].get("typed_per_filter_config", {})
    # The comparison listener balances the same bridges round robin, without the picker.
    assert round_robin["address"]["socket_address"]["address"] == "127.0.0.1"
    assert "envoy.filters.http.ext_proc" not in {f["name"] for f in manager(round_robin)["http_filters"]}
    assert clusters["bridge_round_robin"]["lb_policy"] == "ROUND_ROBIN"


def test_envoy_accepts_the_configuration(tmp_path: Path) -> None:
    ensure_mesh_certs(tmp_path / "certs")
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(picked_config(tmp_path / "certs")))
    envoy = Path(sys.executable).with_name("envoy")
    done = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
