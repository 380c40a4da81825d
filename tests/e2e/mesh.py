"""Starting a real mesh (`multai serve` in a subprocess) for end-to-end tests."""

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from multai.mesh_tls import MeshChannels
from multai.ports import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Fits one of the two default chat models but not both, so alternating requests must swap them.
SWAP_RAM_BUDGET_BYTES = 500_000_000
# `node_services` for a test that needs chat alone: such a mesh starts in ~5 s instead of ~20 s, as it loads
# no torch, diffusers or Whisper.
CHAT_ONLY = '["chat"]'


@dataclass
class Mesh:
    process: subprocess.Popen[bytes]
    base_url: str
    scheduler_address: str
    log_path: Path
    metrics_url: str
    chat_address: str
    audio_address: str
    image_address: str
    vision_address: str
    image_store: Path
    # The mesh's own CA and certificates, made by `multai serve` in the temporary state folder.
    certs_dir: Path
    # Each model service's Prometheus endpoint, by service name.
    service_metrics_urls: dict[str, str]
    # The CA that HTTP clients verify base_url with, when the mesh's edge terminates TLS.
    edge_ca: Path | None = None

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """httpx's `verify` for base_url (the edge's CA file exists once `multai serve` has made it)."""
        return True if self.edge_ca is None else ssl.create_default_context(cafile=self.edge_ca)

    @property
    def channels(self) -> MeshChannels:
        """Opens channels to the mesh with its own certificate, as its processes do."""
        return MeshChannels(self.certs_dir)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"multai serve exited early:\n{self.log()}")
            try:
                readyz = f"{self.base_url.removesuffix('/v1')}/readyz"
                waiting_for_ca = self.edge_ca is not None and not self.edge_ca.exists()
                if not waiting_for_ca and httpx.get(readyz, timeout=1, verify=self.verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"mesh not ready in {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def start_mesh(
    models_dir: Path,
    log_path: Path,
    *,
    source: Path = PROJECT_ROOT,
    wrapper: Sequence[str] = (),
    own_process_group: bool = False,
    **settings: str,
) -> Mesh:
    """`multai serve` from the checkout `source` on free ports; settings become MULTAI_<NAME> variables.

    Its state folder (certificates, database) is beside the log, never the user's own.

    Another checkout (an older commit, for a before-and-after benchmark) runs with this interpreter;
    `wrapper` prefixes the command (e.g. a tracer). `own_process_group` starts it in a session of its own, so
    that a test can kill the whole mesh with one os.killpg.
    """
    port, scheduler_port, metrics_port = free_port(), free_port(), free_port()
    chat_port, audio_port, image_port, vision_port = free_port(), free_port(), free_port(), free_port()
    service_metrics_ports = {name: free_port() for name in ("chat", "audio", "image", "vision")}
    image_store = log_path.parent / "images"
    state_dir = log_path.parent / "state"
    env = dict(
        os.environ,
        MULTAI_RAM_BUDGET_BYTES=str(SWAP_RAM_BUDGET_BYTES),
        MULTAI_N_THREADS="2",
        MULTAI_IMAGE_STORE_DIR=str(image_store),
        MULTAI_STATE_DIR=str(state_dir),
        MULTAI_CERTS_DIR=str(state_dir / "certs"),
        PYTHONPATH=str(source),
    )
    env.update({f"MULTAI_{name.upper()}": value for name, value in settings.items()})
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [
            *wrapper,
            sys.executable,
            "-m",
            "multai.cli",
            "serve",
            "--models-dir",
            str(models_dir),
            "--port",
            str(port),
            "--scheduler-port",
            str(scheduler_port),
            "--chat-port",
            str(chat_port),
            "--audio-port",
            str(audio_port),
            "--image-port",
            str(image_port),
            "--vision-port",
            str(vision_port),
            "--metrics-port",
            str(metrics_port),
            *(f"--{name}-metrics-port={port}" for name, port in service_metrics_ports.items()),
            "--no-install-models",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=source,
        start_new_session=own_process_group,
    )
    edge_tls = settings.get("edge", "") == "true" and settings.get("edge_tls", "") == "true"
    mesh = Mesh(
        process,
        f"{'https' if edge_tls else 'http'}://127.0.0.1:{port}/v1",
        f"127.0.0.1:{scheduler_port}",
        log_path,
        f"http://127.0.0.1:{metrics_port}/metrics",
        f"127.0.0.1:{chat_port}",
        f"127.0.0.1:{audio_port}",
        f"127.0.0.1:{image_port}",
        f"127.0.0.1:{vision_port}",
        image_store,
        state_dir / "certs",
        {name: f"http://127.0.0.1:{port}/metrics" for name, port in service_metrics_ports.items()},
        state_dir / "certs" / "ca.pem" if edge_tls else None,
    )
    mesh.wait_ready()
    return mesh
