"""The Kubernetes manifests: both overlays rendered by a real kustomize (kubectl's), valid against a
current Kubernetes in strict mode, and held to the deployment policy; Envoy's ConfigMap is the generator's."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.mesh import PROJECT_ROOT

K8S = PROJECT_ROOT / "k8s"
OVERLAYS = ("cpu", "gpu", "inference-gateway")
# Where the base's scheduler DaemonSet is the node's arbiter (in inference-gateway, the node pod is).
SCHEDULER_OVERLAYS = ("cpu", "gpu")
KUBERNETES_VERSION = "1.37.0"
# `multai edge config` as k8s/base/envoy/envoy.json was made (the Services' names and ports).
EDGE_CONFIG_ARGS = [
    "--bridge", "multai-bridge:8081",
    "--chat", "multai-chat:50051",
    "--audio", "multai-audio:50052",
    "--image", "multai-image:50053",
    "--vision", "multai-vision:50054",
    "--edge-certs-dir", "/etc/multai/certs",
]  # fmt: skip
# The CRDs, of the Prometheus Operator and of the Gateway API (Inference Extension), have no schema in
# Kubernetes itself; test_the_inference_pool_names_the_picker_and_the_node_pods checks the latter's fields.
KINDS_WITHOUT_SCHEMA = {"ServiceMonitor", "InferencePool", "HTTPRoute"}
GPU = "nvidia.com/gpu"


def kubectl() -> str:
    found = shutil.which("kubectl")
    assert found, "kubectl (with its built-in kustomize) is needed: install Debian's kubectl package"
    return found


def render(overlay: str, folder: Path) -> Path:
    rendered = folder / f"{overlay}.yaml"
    done = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    rendered.write_text(done.stdout)
    return rendered


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """Each workload's name, pod spec and labels."""
    return [
        (
            f"{doc['kind']}/{doc['metadata']['name']}",
            doc["spec"]["template"]["spec"],
            doc["metadata"]["labels"],
        )
        for doc in docs
        if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job")
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_renders_and_validates_strictly(overlay: str, tmp_path: Path) -> None:
    rendered = render(overlay, tmp_path)
    validator = Path(sys.executable).with_name("kubernetes-validate")
    done = subprocess.run(
        [str(validator), "--strict", "-k", KUBERNETES_VERSION, str(rendered)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    problems = [line for line in done.stdout.splitlines() if not line.startswith("INFO")]
    assert all(any(kind in line for kind in KINDS_WITHOUT_SCHEMA) for line in problems), problems
    assert len(documents(rendered)) >= 25


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_meets_the_policy(overlay: str, tmp_path: Path) -> None:
    docs = documents(render(overlay, tmp_path))
    specs = pod_specs(docs)
    assert len(specs) >= 8
    for name, spec, _ in specs:
        pod_security = spec.get("securityContext", {})
        is_job = name.startswith("Job/")
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{name} {container['name']}"
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: {kind}"
            assert GPU not in resources.get("requests", {}), f"{where}: a GPU belongs under limits only"
            # A Job's container runs to completion: readiness means nothing there.
            if not is_job:
                assert "readinessProbe" in container and "livenessProbe" in container, where
            security = container.get("securityContext", {})
            assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
    model_services = [spec for _, spec, labels in specs if labels.get("multai.dev/role") == "model-service"]
    assert len(model_services) == 4
    gpu_limits = [GPU in spec["containers"][0]["resources"]["limits"] for spec in model_services]
    assert gpu_limits == [overlay != "cpu"] * 4


@pytest.mark.parametrize("overlay", SCHEDULER_OVERLAYS)
def test_the_scheduler_is_one_per_node_and_reached_node_locally(overlay: str, tmp_path: Path) -> None:
    docs = documents(render(overlay, tmp_path))
    by_name = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    assert ("DaemonSet", "multai-scheduler") in by_name
    assert ("Deployment", "multai-scheduler") not in by_name
    assert by_name[("Service", "multai-scheduler")]["spec"]["internalTrafficPolicy"] == "Local"
    probes = by_name[("DaemonSet", "multai-scheduler")]["spec"]["template"]["spec"]["containers"][0]
    assert "grpc" in probes["readinessProbe"]
    kinds = {doc["kind"] for doc in docs}
    assert {"PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler", "ServiceMonitor"} <= kinds


@pytest.mark.parametrize(
    ("config", "extra"),
    [
        ("base/envoy/envoy.json", []),
        (
            "overlays/inference-gateway/envoy.json",
            ["--bridge", "multai-node:8081", "--picker", "multai-picker:9002"],
        ),
    ],
)
def test_envoys_config_map_is_the_generators_output(config: str, extra: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "multai.cli", "edge", "config", *EDGE_CONFIG_ARGS, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )
    assert done.returncode == 0, done.stderr
    committed = (K8S / config).read_text()
    assert committed == done.stdout, f"k8s/{config} is stale: rerun `multai edge config` (see the test)"


def test_the_inference_pool_names_the_picker_and_the_node_pods(tmp_path: Path) -> None:
    docs = documents(render("inference-gateway", tmp_path))
    by_name = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    pool = by_name[("InferencePool", "multai")]["spec"]
    assert by_name[("InferencePool", "multai")]["apiVersion"] == "inference.networking.k8s.io/v1"
    node = by_name[("DaemonSet", "multai-node")]
    pod_labels = node["spec"]["template"]["metadata"]["labels"]
    assert pool["selector"]["matchLabels"].items() <= pod_labels.items()
    containers = {c["name"]: c for c in node["spec"]["template"]["spec"]["containers"]}
    bridge_ports = [port["containerPort"] for port in containers["bridge"]["ports"]]
    assert [target["number"] for target in pool["targetPorts"]] == bridge_ports
    # The picker the pool names is a Service on the picker's port, and Envoy fails closed without it.
    picker_ref = pool["endpointPickerRef"]
    assert picker_ref["failureMode"] == "FailClose"
    picker_service = by_name[("Service", picker_ref["name"])]
    assert picker_ref["port"]["number"] in [port["port"] for port in picker_service["spec"]["ports"]]
    picker = by_name[("Deployment", "multai-picker")]["spec"]["template"]["spec"]["containers"][0]
    assert f"--port={picker_ref['port']['number']}" in picker["args"]
    assert "--nodes-dns=multai-node" in picker["args"]
    # The node pod is its node's one scheduler: the base's node-local Service reaches it, nothing else.
    assert ("DaemonSet", "multai-scheduler") not in by_name and ("Deployment", "multai-bridge") not in by_name
    scheduler_service = by_name[("Service", "multai-scheduler")]["spec"]
    assert scheduler_service["internalTrafficPolicy"] == "Local"
    assert scheduler_service["selector"].items() <= pod_labels.items()
    assert by_name[("Service", "multai-node")]["spec"]["clusterIP"] == "None"
    envoy = json.loads(
        by_name[("ConfigMap", next(n for k, n in by_name if n.startswith("multai-envoy")))]["data"][
            "envoy.json"
        ]
    )
    filters = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ext_proc = next(f for f in filters["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")
    assert ext_proc["typed_config"]["failure_mode_allow"] is False
