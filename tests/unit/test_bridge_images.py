"""The bridge's image store (expiry, safe names) and its image-input policy (data URLs, allow-list)."""

import asyncio
import base64
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rest_bridge.errors import OpenAIError
from rest_bridge.serving.image_input import ImageInputs
from rest_bridge.serving.images import ImageStore

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def test_store_serves_until_the_ttl_then_deletes(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, ttl_seconds=60)
    name = store.put(PNG)
    path = store.path_of(name)
    assert path is not None and path.read_bytes() == PNG
    assert store.delete_expired() == 0
    aged = time.time() - 61
    os.utime(path, (aged, aged))
    assert store.path_of(name) is None
    assert store.delete_expired() == 1
    assert not path.exists()


def test_store_names_are_unguessable_and_only_its_own(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images", ttl_seconds=60)
    names = {store.put(PNG) for _ in range(20)}
    assert len(names) == 20 and all(len(n) > 40 for n in names)
    (tmp_path / "secret.png").write_bytes(PNG)
    for name in ("../secret.png", "secret.png", ".hidden.png", "x.txt", "/etc/passwd"):
        assert store.path_of(name) is None


async def test_a_failed_sweep_does_not_stop_the_sweeper(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    store = ImageStore(folder, ttl_seconds=0.05)
    folder.rmdir()
    sweeper = asyncio.create_task(store.sweep_forever())
    try:
        await asyncio.sleep(0.2)  # Sweeps fail while the folder is gone.
        folder.mkdir()
        path = folder / store.put(PNG)
        for _ in range(100):
            if not path.exists():
                break
            await asyncio.sleep(0.05)
        assert not path.exists() and not sweeper.done()
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


def inputs(*hosts: str, max_bytes: int = 1000) -> ImageInputs:
    return ImageInputs(list(hosts), max_bytes, fetch_timeout_seconds=1)


async def test_data_urls_decode() -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert await inputs().load(url, "p") == PNG


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,@@@",
        "data:image/png,rawbytes",
        "data:text/html;base64,PGgxPg==",
        "data:image/png;base64,",
        "data:image/png;base64," + base64.b64encode(b"x" * 2000).decode(),
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "not a url",
    ],
)
async def test_bad_urls_are_400_naming_the_param(url: str) -> None:
    with pytest.raises(OpenAIError) as raised:
        await inputs().load(url, "messages[0].content[1].image_url.url")
    assert raised.value.status == 400
    assert raised.value.param == "messages[0].content[1].image_url.url"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/v1/models",
        "https://images.example.com.evil.test/cat.png",
        "https://user@images.example.com@evil.test/cat.png",
    ],
)
async def test_hosts_off_the_allow_list_are_refused_before_any_connection(url: str) -> None:
    # The allow-list names another host; a connection attempt would fail differently (or hang).
    with pytest.raises(OpenAIError) as raised:
        await inputs("images.example.com").load(url, "p")
    assert raised.value.code == "image_url_not_allowed"


class _ImageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/")
            self.end_headers()
            return
        body = PNG * (100 if self.path == "/huge.png" else 1)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def test_allowed_hosts_are_fetched_without_redirects_or_oversize(image_server: str) -> None:
    allowed = inputs("127.0.0.1")
    assert await allowed.load(f"{image_server}/cat.png", "p") == PNG
    for path in ("/redirect", "/huge.png"):
        with pytest.raises(OpenAIError) as raised:
            await allowed.load(f"{image_server}{path}", "p")
        assert raised.value.status == 400
