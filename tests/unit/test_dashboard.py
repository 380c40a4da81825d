"""The Grafana dashboard queries only metrics that the processes export, under the names they export."""

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from multai.api_keys import KeyStore
from multai.service_metrics import ServiceMetrics
from multai.state_db import open_engine
from rest_bridge.auth import KeyRing
from rest_bridge.metrics import BridgeMetrics
from scheduler.metrics import SchedulerMetrics
from tests.e2e.mesh import PROJECT_ROOT

DASHBOARD = PROJECT_ROOT / "k8s" / "grafana" / "multai-dashboard.json"
METRIC_NAME = re.compile(r"\bmultai_[a-z_]+\b")
# The series each metric type exposes, by the suffix added to the metric's name.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_series(tmp_path: Path) -> set[str]:
    bridge = CollectorRegistry()
    BridgeMetrics(bridge)
    KeyRing(KeyStore(open_engine(f"sqlite:///{tmp_path / 'state.db'}")), bridge, required=False)
    registries = [bridge, ServiceMetrics().registry, SchedulerMetrics().registry]
    return {
        family.name + suffix
        for registry in registries
        for family in registry.collect()
        for suffix in SUFFIXES[family.type]
    }


def test_every_query_names_an_exported_series(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in METRIC_NAME.findall(target["expr"])
    }
    exported = exported_series(tmp_path)
    assert len(queried) >= 14
    assert queried <= exported, f"not exported: {sorted(queried - exported)}"


def test_the_check_notices_a_misspelt_metric(tmp_path: Path) -> None:
    assert "multai_time_to_first_token_seconds_bucket" in exported_series(tmp_path)
    assert "vllm_time_to_first_token_seconds_bucket" not in exported_series(tmp_path)
    assert "multai_generation_tokens_bucket" not in exported_series(tmp_path)
