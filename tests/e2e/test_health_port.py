"""The plaintext health port for Kubernetes' grpc probes: health answers there, nothing else does."""

import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from multai.mesh_tls import create_mesh_certs
from multai.ports import free_port
from multai.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from tests.e2e.mesh import PROJECT_ROOT


def test_the_health_port_serves_health_alone(tmp_path: Path) -> None:
    create_mesh_certs(tmp_path / "certs")
    port, health_port = free_port(), free_port()
    command = [sys.executable, "-m", "scheduler", "--port", str(port), "--health-port", str(health_port)]
    command += ["--certs-dir", str(tmp_path / "certs"), "--state-dir", str(tmp_path)]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stderr=subprocess.DEVNULL)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            while True:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.2)
            with pytest.raises(grpc.RpcError) as refused:
                scheduler_pb2_grpc.SchedulerServiceStub(channel).GetStatus(
                    scheduler_pb2.GetStatusRequest(), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        process.terminate()
        process.wait(30)
