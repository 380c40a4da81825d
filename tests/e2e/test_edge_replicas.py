"""Two chat-service replicas behind the edge: requests spread over both, and when one is killed, no request
that had not started streaming is lost, while streams it was serving fail with a clear error."""

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from multai.client import APIError, MultAI
from multai.ports import free_port
from tests.e2e.mesh import Mesh, start_mesh

CHAT_MODEL = "smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Tell me about the sea."}]


@dataclass
class EdgeMesh:
    mesh: Mesh
    admin_url: str
    replica_ports: list[int]


@pytest.fixture(scope="module")
def two_chats(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeMesh]:
    folder = tmp_path_factory.mktemp("replicas")
    admin_port, extra_port = free_port(), free_port()
    mesh = start_mesh(
        models_dir,
        folder / "serve.log",
        edge="true",
        edge_tls="true",
        bridge_port=str(free_port()),
        edge_admin_port=str(admin_port),
        extra_chat_ports=f"[{extra_port}]",
    )
    first = int(mesh.chat_address.rpartition(":")[2])
    yield EdgeMesh(mesh, f"http://127.0.0.1:{admin_port}", [first, extra_port])
    mesh.stop()


def requests_per_replica(edge: EdgeMesh) -> dict[int, int]:
    """Envoy's count of requests sent to each chat replica."""
    clusters = httpx.get(f"{edge.admin_url}/clusters", timeout=10).text
    counts = {port: 0 for port in edge.replica_ports}
    for port, count in re.findall(r"^chat::127\.0\.0\.1:(\d+)::rq_total::(\d+)$", clusters, re.MULTILINE):
        counts[int(port)] = int(count)
    return counts


def edge_client(edge: EdgeMesh) -> MultAI:
    address = edge.mesh.base_url.removeprefix("https://").removesuffix("/v1")
    return MultAI(address, certs_dir=edge.mesh.certs_dir, timeout=300)


def test_requests_spread_across_both_replicas(two_chats: EdgeMesh) -> None:
    before = requests_per_replica(two_chats)
    with edge_client(two_chats) as client:
        threads = [
            threading.Thread(
                target=lambda: client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=4)
            )
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    after = requests_per_replica(two_chats)
    served = {port: after[port] - before[port] for port in two_chats.replica_ports}
    assert all(count > 0 for count in served.values()), served


@dataclass
class Outcome:
    started: threading.Event = field(default_factory=threading.Event)
    started_before_kill: bool = False
    error: APIError | None = None
    text: str = ""


def stream_into(client: MultAI, outcome: Outcome) -> None:
    try:
        for chunk in client.chat.completions.create(
            model=CHAT_MODEL, messages=HELLO, max_tokens=48, temperature=0, stream=True
        ):
            outcome.started.set()
            if chunk.choices:
                outcome.text += chunk.choices[0].delta.content or ""
    except APIError as exc:
        outcome.error = exc


def test_killing_a_replica_loses_no_request_that_had_not_started(two_chats: EdgeMesh) -> None:
    serve = psutil.Process(two_chats.mesh.process.pid)
    extra = two_chats.replica_ports[1]
    victim = next(
        child for child in serve.children() if f"--port {extra} " in " ".join(child.cmdline()) + " "
    )
    retries_before = edge_stat(two_chats, "cluster.chat.upstream_rq_retry")
    # More streams than both replicas' batches hold (4 slots each), so that the victim has requests that
    # wait whichever replica runs first, and whether or not their leases overlap.
    outcomes = [Outcome() for _ in range(12)]
    with edge_client(two_chats) as client:
        threads = [threading.Thread(target=stream_into, args=(client, outcome)) for outcome in outcomes]
        for thread in threads:
            thread.start()
        # Kill once a stream is under way: the streams past both batches still wait for a slot.
        deadline = time.monotonic() + 120
        while not any(outcome.started.is_set() for outcome in outcomes):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for outcome in outcomes:
            outcome.started_before_kill = outcome.started.is_set()
        victim.kill()
        for thread in threads:
            thread.join(600)
    for outcome in outcomes:
        # A stream whose first chunk was already on its way when the replica died counts as started even
        # if it arrived after the kill: what must never happen is a failure before any output.
        if outcome.error is not None:
            assert outcome.started.is_set(), f"a request that had not started was lost: {outcome.error}"
            assert str(outcome.error), "a broken stream must say why"
        else:
            assert outcome.text
    # The two replicas' batches hold 8 of the 12 streams at most, so at least 4 were waiting at the kill.
    assert sum(not outcome.started_before_kill for outcome in outcomes) >= 4
    # Requests that waited on the killed replica were sent again, to the other one.
    assert edge_stat(two_chats, "cluster.chat.upstream_rq_retry") > retries_before


def edge_stat(edge: EdgeMesh, name: str) -> int:
    stats = httpx.get(f"{edge.admin_url}/stats", params={"filter": f"^{re.escape(name)}$"}, timeout=10).text
    match = re.search(rf"^{re.escape(name)}: (\d+)$", stats, re.MULTILINE)
    return int(match[1]) if match else 0
