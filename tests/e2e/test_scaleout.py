"""Two node groups behind one edge and the endpoint picker (`multai serve --nodes 2`), on one machine.

Each node has its own scheduler, chat service and bridge, and a RAM budget that holds one of the two chat
models, not both: the topology of two GPU nodes. The same edge also listens round robin on a second port,
so one mesh shows both: model-aware routing never swaps, round robin swaps on most requests.
"""

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from multai.ports import free_port
from tests.e2e.mesh import Mesh, start_mesh

A, B = "smollm2-135m-instruct", "gemma-3-270m"
HELLO = [{"role": "user", "content": "Tell me about the sea."}]
# Round robin alternates the nodes; the workload alternates the models with a shift (A B B A ...) so that
# the two do not happen to line up, as they would not with more nodes or real traffic.
WORKLOAD = "ABBAABBAABBA"


@dataclass
class Nodes:
    mesh: Mesh
    nodes: list[dict[str, object]]
    round_robin_url: str
    picker_metrics_url: str
    admin_url: str

    def client(self, base_url: str | None = None) -> openai.OpenAI:
        url = base_url or self.mesh.base_url
        return openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0, timeout=300)

    def scheduler_metric(self, index: int, name: str, labels: str = "") -> float:
        text = httpx.get(str(self.nodes[index]["scheduler_metrics"]), timeout=10).text
        match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
        return float(match[1]) if match else 0.0

    def swaps(self) -> list[float]:
        return [self.scheduler_metric(i, "multai_scheduler_evictions_total") for i in range(len(self.nodes))]

    def holding(self, model: str) -> list[int]:
        """The nodes where the model is resident (its batch slots are shown only then)."""
        labels = f'{{model="{model}"}}'
        return [
            i
            for i in range(len(self.nodes))
            if self.scheduler_metric(i, "multai_scheduler_batch_slots", labels) > 0
        ]

    def picker_metric(self, name: str) -> float:
        text = httpx.get(self.picker_metrics_url, timeout=10).text
        return sum(float(value) for value in re.findall(rf"^{re.escape(name)}(?:{{.*}})? (\S+)$", text, re.M))


@pytest.fixture(scope="module")
def two_nodes(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    folder = tmp_path_factory.mktemp("nodes")
    round_robin_port, picker_metrics_port, admin_port = free_port(), free_port(), free_port()
    mesh = start_mesh(
        models_dir,
        folder / "serve.log",
        nodes="2",
        node_services='["chat"]',
        bridge_port=str(free_port()),
        edge_admin_port=str(admin_port),
        picker_port=str(free_port()),
        picker_metrics_port=str(picker_metrics_port),
        edge_round_robin_port=str(round_robin_port),
        # Low, so that a few requests saturate two nodes.
        shed_background_waiting="2",
    )
    nodes = json.loads((folder / "state" / "nodes.json").read_text())
    yield Nodes(
        mesh,
        nodes,
        f"http://127.0.0.1:{round_robin_port}/v1",
        f"http://127.0.0.1:{picker_metrics_port}/metrics",
        f"http://127.0.0.1:{admin_port}",
    )
    mesh.stop()


def run(client: openai.OpenAI, workload: str) -> None:
    for letter in workload:
        reply = client.chat.completions.create(
            model={"A": A, "B": B}[letter], messages=HELLO, max_tokens=4, temperature=0
        )
        assert reply.choices[0].message.content


def test_alternating_models_never_swap_through_the_picker_and_swap_mostly_round_robin(
    two_nodes: Nodes,
) -> None:
    picked = two_nodes.client()
    run(picked, "AB")  # warm-up: each model loads once, on its own node
    assert sorted(two_nodes.holding(A) + two_nodes.holding(B)) == [0, 1]
    before = sum(two_nodes.swaps())
    run(picked, WORKLOAD)
    assert sum(two_nodes.swaps()) == before, "the picker sent a model where it was not loaded"

    before = sum(two_nodes.swaps())
    run(two_nodes.client(two_nodes.round_robin_url), WORKLOAD)
    swaps = sum(two_nodes.swaps()) - before
    assert swaps > len(WORKLOAD) / 2, f"round robin swapped on only {swaps} of {len(WORKLOAD)} requests"


def test_every_node_exports_the_inference_extensions_model_server_metrics(two_nodes: Nodes) -> None:
    run(two_nodes.client(), "AB")
    loaded = []
    for node in two_nodes.nodes:
        text = httpx.get(str(node["service_metrics"]["chat"]), timeout=10).text  # type: ignore[index]
        for name in (
            "multai:num_requests_waiting",
            "multai:num_requests_running",
            "multai:kv_cache_usage_perc",
        ):
            assert re.search(rf"^{re.escape(name)} \d", text, re.MULTILINE), name
        info = re.search(r"^multai:lora_requests_info\{(.*)\} (\S+)$", text, re.MULTILINE)
        assert info is not None
        labels = dict(re.findall(r'(\w+)="([^"]*)"', info[1]))
        assert float(info[2]) > 1e9  # the time it was computed, as vLLM's
        loaded += labels["running_lora_adapters"].split(",")
        assert int(labels["max_lora"]) >= 2
    # Each node reports the model it holds as its running "adapter".
    assert sorted(loaded) == sorted([A, B])
    # Its scheduler serves the node's totals the same way, for a pool whose endpoints are node pods.
    held = []
    for node in two_nodes.nodes:
        text = httpx.get(str(node["scheduler_metrics"]), timeout=10).text
        info = re.search(r"^multai:lora_requests_info\{(.*)\} \S+$", text, re.MULTILINE)
        assert info is not None and re.search(r"^multai:num_requests_waiting \d", text, re.MULTILINE)
        held += dict(re.findall(r'(\w+)="([^"]*)"', info[1]))["running_lora_adapters"].split(",")
    assert sorted(held) == sorted([A, B])


@dataclass
class Outcome:
    model: str
    started: threading.Event = field(default_factory=threading.Event)
    started_before_kill: bool = False
    error: Exception | None = None
    text: str = ""


def stream_into(client: openai.OpenAI, outcome: Outcome, max_tokens: int) -> None:
    try:
        for chunk in client.chat.completions.create(
            model=outcome.model, messages=HELLO, max_tokens=max_tokens, temperature=0, stream=True
        ):
            outcome.started.set()
            if chunk.choices:
                outcome.text += chunk.choices[0].delta.content or ""
    except (openai.APIError, httpx.HTTPError) as exc:
        outcome.error = exc


def node_processes(two_nodes: Nodes, index: int) -> list[psutil.Process]:
    """The scheduler, chat service and bridge of one node group."""
    node = two_nodes.nodes[index]
    ports = [str(node["scheduler"]).rpartition(":")[2], str(node["endpoint"]).rpartition(":")[2]]
    ports.append(str(node["services"]["chat"]).rpartition(":")[2])  # type: ignore[index]
    serve = psutil.Process(two_nodes.mesh.process.pid)
    found = [
        child
        for child in serve.children()
        if any(f"--port {port} " in " ".join(child.cmdline()) + " " for port in ports)
    ]
    assert len(found) == 3, found
    return found


def test_killing_a_node_moves_its_model_to_the_other_and_loses_no_request_that_had_not_started(
    two_nodes: Nodes,
) -> None:
    client = two_nodes.client()
    run(client, "AB")
    (b_node,) = two_nodes.holding(B)
    (a_node,) = two_nodes.holding(A)
    retries_before = edge_stat(two_nodes, "cluster.bridge.upstream_rq_retry")
    # A keeps its node busy, so B's requests past its node's slots queue there instead of moving.
    outcomes = [Outcome(A) for _ in range(3)] + [Outcome(B) for _ in range(9)]
    threads = [
        threading.Thread(target=stream_into, args=(client, o, 64 if o.model == A else 48)) for o in outcomes
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    deadline = time.monotonic() + 120
    while not any(o.started.is_set() for o in outcomes if o.model == B):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for outcome in outcomes:
        outcome.started_before_kill = outcome.started.is_set()
    for process in node_processes(two_nodes, b_node):
        process.kill()
    for thread in threads:
        thread.join(600)
    assert not any(thread.is_alive() for thread in threads), "a request hangs"
    for outcome in outcomes:
        if outcome.error is not None:
            # A stream cut by its node's death fails loudly; what must never happen is a failure before
            # any output, which Envoy retries on the other node.
            assert outcome.started.is_set(), f"a request that had not started was lost: {outcome.error!r}"
            assert str(outcome.error)
        else:
            assert outcome.text, outcome
    assert sum(not o.started_before_kill for o in outcomes) >= 2
    # Requests queued on the dead node were sent again, to the other, which loaded B for them.
    assert edge_stat(two_nodes, "cluster.bridge.upstream_rq_retry") > retries_before
    assert a_node in two_nodes.holding(B)
    # And later requests for B are served while the dead node restarts.
    run(client, "B")


def edge_stat(two_nodes: Nodes, name: str) -> int:
    stats = httpx.get(
        f"{two_nodes.admin_url}/stats", params={"filter": f"^{re.escape(name)}$"}, timeout=10
    ).text
    match = re.search(rf"^{re.escape(name)}: (\d+)$", stats, re.MULTILINE)
    return int(match[1]) if match else 0


def wait_for_both_nodes(two_nodes: Nodes) -> None:
    """Until the picker follows both nodes again (after the restart of a killed one)."""
    deadline = time.monotonic() + 120
    while two_nodes.picker_metric("multai_picker_ready_nodes") < 2:
        assert time.monotonic() < deadline, "the killed node did not come back"
        time.sleep(0.2)


def test_under_saturation_background_requests_are_shed_before_normal_and_urgent_ones(
    two_nodes: Nodes,
) -> None:
    wait_for_both_nodes(two_nodes)
    client = two_nodes.client()
    outcomes = [Outcome(A if i % 2 else B) for i in range(16)]
    threads = [threading.Thread(target=stream_into, args=(client, o, 32)) for o in outcomes]
    for thread in threads:
        thread.start()
    # Saturated: two requests waiting on every node (the test's threshold for background requests).
    deadline = time.monotonic() + 120
    while (
        min(two_nodes.scheduler_metric(i, "multai_scheduler_queue_length", '{level="1"}') for i in (0, 1)) < 2
    ):
        assert time.monotonic() < deadline, "the nodes never saturated"
        time.sleep(0.05)
    http = httpx.Client(base_url=two_nodes.mesh.base_url, timeout=300)
    body = {"model": A, "messages": HELLO, "max_tokens": 2}
    shed = http.post("/chat/completions", json=body, headers={"X-MultAI-Priority": "2"})
    assert shed.status_code == 429, shed.text
    assert int(shed.headers["retry-after"]) >= 1
    assert shed.json()["error"]["type"] == "rate_limit_error"
    # The same request at normal and at urgent priority is accepted, and served once its turn comes.
    for priority in ("1", "0"):
        served = http.post("/chat/completions", json=body, headers={"X-MultAI-Priority": priority})
        assert served.status_code == 200, served.text
    for thread in threads:
        thread.join(600)
    assert all(o.error is None for o in outcomes)
    assert two_nodes.picker_metric('multai_picker_decisions_total{outcome="shed",priority="2"}') >= 1


def test_the_picker_decides_within_its_budget(two_nodes: Nodes) -> None:
    # Every decision so far (hundreds above, under load on two cores) took under 25 ms; most far less.
    buckets = httpx.get(two_nodes.picker_metrics_url, timeout=10).text
    count = two_nodes.picker_metric("multai_picker_decision_seconds_count")
    within = re.search(r'^multai_picker_decision_seconds_bucket\{le="0.025"\} (\S+)$', buckets, re.MULTILINE)
    assert count > 20 and within is not None
    assert float(within[1]) == count
