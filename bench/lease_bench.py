"""Lease round trip and grants/s of the scheduler on loopback (goal: p50 < 1 ms, >= 2,000 grants/s).

Starts a real scheduler process, registers as a service through the same SchedulerClient the modality
services use, and measures:
  - round trip: claim -> grant -> release, one at a time (the default exclusive CPU lease);
  - the floor: a bare unary RPC to the same scheduler, so the lease cost reads as a ratio to what gRPC
    itself costs on this machine (absolute times vary a lot between machines);
  - throughput: concurrent holders against a scheduler that allows that many leases at once.

    python -m bench.lease_bench [--leases N] [--concurrency K] [--json PATH]
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from multai.common.v1 import common_pb2
from multai.mesh_tls import MeshChannels, ensure_mesh_certs
from multai.ports import free_port
from multai.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from multai.scheduler_client import SchedulerClient
from tests.e2e.mesh import PROJECT_ROOT


async def _wait_serving(channels: MeshChannels, address: str) -> None:
    async with channels.aio_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(200):
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("scheduler did not start")


async def _client(channels: MeshChannels, address: str, models: int) -> SchedulerClient:
    footprints = [scheduler_pb2.ModelFootprint(model=f"m{i}", size_bytes=1_000) for i in range(models)]
    client = SchedulerClient(address, "bench", channels)
    await client.start(10, footprints)
    return client


async def round_trips(channels: MeshChannels, address: str, leases: int) -> list[float]:
    """Seconds per claim -> grant -> release, one after another."""
    client = await _client(channels, address, 1)
    seconds = []
    for i in range(leases):
        started = time.perf_counter()
        async with client.lease(f"r{i}", "m0", common_pb2.PRIORITY_NORMAL, 10):
            seconds.append(time.perf_counter() - started)
    await client.close()
    return seconds


async def unary_round_trips(channels: MeshChannels, address: str, calls: int) -> list[float]:
    """Seconds per bare unary RPC (GetStatus) to the same scheduler: the gRPC floor of this machine."""
    async with channels.aio_channel(address) as channel:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        seconds = []
        for _ in range(calls):
            started = time.perf_counter()
            await stub.GetStatus(scheduler_pb2.GetStatusRequest())
            seconds.append(time.perf_counter() - started)
    return seconds


async def throughput(channels: MeshChannels, address: str, concurrency: int, leases: int) -> float:
    """Grants per second with `concurrency` holders taking and releasing leases in a loop."""
    client = await _client(channels, address, concurrency)

    async def worker(index: int, count: int) -> None:
        for i in range(count):
            async with client.lease(f"w{index}-{i}", f"m{index}", common_pb2.PRIORITY_NORMAL, 30):
                pass

    per_worker = max(1, leases // concurrency)
    started = time.perf_counter()
    await asyncio.gather(*(worker(i, per_worker) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    return per_worker * concurrency / elapsed


def run(leases: int, concurrency: int) -> dict[str, float]:
    """Starts two schedulers (exclusive leases, then `concurrency` leases) and measures each, over the
    mesh's mutual TLS with certificates made for the run."""
    with tempfile.TemporaryDirectory() as scratch:
        certs = Path(scratch)
        ensure_mesh_certs(certs)
        return _measure(MeshChannels(certs), leases, concurrency)


def _measure(channels: MeshChannels, leases: int, concurrency: int) -> dict[str, float]:
    results: dict[str, float] = {}
    for max_leases in (1, concurrency):
        port = free_port()
        scheduler = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scheduler",
                "--port",
                str(port),
                "--max-cpu-leases",
                str(max_leases),
                "--log-level",
                "WARNING",
                "--certs-dir",
                str(channels.certs_dir),
            ],
            cwd=PROJECT_ROOT,
        )
        address = f"127.0.0.1:{port}"
        try:
            asyncio.run(_wait_serving(channels, address))
            if max_leases == 1:
                samples = asyncio.run(round_trips(channels, address, leases))
                floor = asyncio.run(unary_round_trips(channels, address, leases))
                ordered = sorted(samples)
                results["lease_round_trip_p50_ms"] = statistics.median(samples) * 1e3
                results["lease_round_trip_p95_ms"] = ordered[int(0.95 * (len(ordered) - 1))] * 1e3
                results["sequential_grants_per_s"] = len(samples) / sum(samples)
                results["grpc_unary_p50_ms"] = statistics.median(floor) * 1e3
                results["lease_p50_over_unary_p50"] = statistics.median(samples) / statistics.median(floor)
            else:
                results[f"grants_per_s_concurrency_{concurrency}"] = asyncio.run(
                    throughput(channels, address, concurrency, leases)
                )
        finally:
            scheduler.terminate()
            scheduler.wait(10)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leases", type=int, default=2000, help="leases per measurement")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent holders for grants/s")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    results = run(args.leases, args.concurrency)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    for name, value in results.items():
        print(f"{name}: {value:.3f}")


if __name__ == "__main__":
    main()
