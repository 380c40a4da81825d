"""Prompts, audio and images never leave the machine: a mesh run under strace, serving a request of every
modality, makes no connection anywhere but loopback.

strace follows every process the supervisor starts (-f) and records each connect(2), the call behind every
TCP connection and every connected UDP socket (DNS lookups included), through a seccomp filter so that
nothing else slows down.
"""

import io
import re
import signal
import wave
from collections.abc import Iterator
from pathlib import Path

import openai
import psutil
import pytest

from tests.e2e.mesh import Mesh, start_mesh

# An address family and, for IP, the address connected to: inet_addr("…") / inet_pton(AF_INET6, "…").
CONNECT = re.compile(
    r'connect\(\d+, \{sa_family=(AF_\w+)(?:.*?(?:inet_addr\(|inet_pton\(AF_INET6, )"([^"]+)")?'
)
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
# Local sockets: Unix (D-Bus, nscd), the kernel's netlink (interface lookups) and AF_UNSPEC (disconnect).
LOCAL_FAMILIES = {"AF_UNIX", "AF_NETLINK", "AF_UNSPEC"}


@pytest.fixture(scope="module")
def traced_mesh(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mesh, Path]]:
    folder = tmp_path_factory.mktemp("privacy")
    trace = folder / "connect.trace"
    wrapper = ["strace", "-f", "--seccomp-bpf", "-e", "trace=connect", "-o", str(trace)]
    running = start_mesh(models_dir, folder / "serve.log", wrapper=wrapper)
    yield running, trace
    # SIGTERM to strace would detach it and leave the mesh running; stop `multai serve` itself.
    for child in psutil.Process(running.process.pid).children():
        child.send_signal(signal.SIGTERM)
    running.process.wait(60)


def one_second_of_silence() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * 16000)
    return buffer.getvalue()


def test_no_process_connects_beyond_loopback(traced_mesh: tuple[Mesh, Path]) -> None:
    mesh, trace = traced_mesh
    client = openai.OpenAI(base_url=mesh.base_url, api_key="local", max_retries=0, timeout=300)
    hello = [{"role": "user", "content": "Say hello."}]
    client.chat.completions.create(model="smollm2-135m-instruct", messages=hello, max_tokens=4)
    client.completions.create(model="smollm2-135m-instruct", prompt="Once", max_tokens=4)
    client.responses.create(model="smollm2-135m-instruct", input="Hi", max_output_tokens=4)
    client.embeddings.create(model="text-embedding-3-small", input="private text")
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input="Private.", response_format="wav")
    client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", speech.content))
    client.audio.translations.create(model="whisper-1", file=("silence.wav", one_second_of_silence()))
    client.images.generate(model="dall-e-2", prompt="a private sketch", size="64x64", n=1)
    image = client.images.generate(model="gpt-image-1", prompt="a red square", size="64x64").data[0].b64_json
    picture = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
        {"type": "text", "text": "What is this?"},
    ]
    client.chat.completions.create(
        model="llava-tiny-random", messages=[{"role": "user", "content": picture}], max_tokens=3
    )

    calls = [CONNECT.search(line) for line in trace.read_text().splitlines() if "connect(" in line]
    found = [(match[1], match[2]) for match in calls if match is not None]
    assert len(found) == len(calls), "a connect(2) line strace wrote was not understood"
    beyond = {
        (family, address)
        for family, address in found
        if family not in LOCAL_FAMILIES and address not in LOOPBACK
    }
    assert not beyond, f"connections beyond loopback: {sorted(beyond, key=str)}"
    # The trace saw the mesh's own loopback traffic, so it was watching.
    assert sum(address in LOOPBACK for _, address in found) >= 10
