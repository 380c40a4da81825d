"""Where each mesh process spends its CPU per streamed token: psutil for the totals, py-spy for the functions.

Starts a mesh from a checkout (this one, or an older commit's for a before-and-after comparison), warms it
up, then streams `--requests` chats of 64 tokens through the REST bridge, `--concurrency` at a time, while
py-spy samples the bridge, the chat service and the scheduler. It prints, per process, the CPU time per
streamed token and the functions that take the largest share of that process's Python samples.

    python -m bench.cpu_profile [--source DIR] [--concurrency N] [--requests N] [--json PATH]

An older commit, for "before": `git worktree add /tmp/before <commit>`, then in /tmp/before run
`<this checkout>/.venv/bin/python -m multai.protogen`, then `--source /tmp/before`. py-spy comes with
`pip install -e ".[loadgen]"` (`make bench-deps`).
"""

import argparse
import asyncio
import collections
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.cli import MODELS_DIR, RESULTS_DIR
from multai.bundled_models import install_bundled
from tests.e2e.mesh import PROJECT_ROOT, Mesh, start_mesh

MODEL = "smollm2-135m-instruct"
PROMPT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]
MAX_TOKENS = 64
THREADS = 2
PROFILED = ("rest_bridge", "services.chat", "scheduler")
SAMPLES_PER_SECOND = 250
TOP_FUNCTIONS = 6
# py-spy's raw format: "thread;frame;frame... count", each frame "function (file:line)".
FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def mesh_processes(mesh: Mesh) -> dict[str, psutil.Process]:
    """The mesh's Python children by module name (the argument after -m)."""
    found = {}
    for child in psutil.Process(mesh.process.pid).children(recursive=True):
        argv = child.cmdline()
        if "-m" in argv:
            found[argv[argv.index("-m") + 1]] = child
    return found


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def stream_chats(base_url: str, concurrency: int, requests: int) -> int:
    """Streams `requests` chats, `concurrency` at a time; returns the completion tokens they reported."""
    gate = asyncio.Semaphore(concurrency)
    body = {
        "model": MODEL,
        "messages": PROMPT,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as http:

        async def one() -> int:
            async with gate, http.stream("POST", "/chat/completions", json=body) as response:
                response.raise_for_status()
                tokens = 0
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        usage = json.loads(line[6:]).get("usage")
                        tokens = usage["completion_tokens"] if usage else tokens
                return tokens

        return sum(await asyncio.gather(*(one() for _ in range(requests))))


def start_py_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` (without pausing it) into `output` until it gets SIGINT."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(SAMPLES_PER_SECOND),
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def top_functions(raw: str) -> tuple[int, list[tuple[str, float]]]:
    """Total samples, and the leaf functions with their share of them (a ctypes call's caller is the leaf)."""
    leaves: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        match = FRAME.match(leaf)
        name = f"{match['function']} ({Path(match['file']).name})" if match else leaf
        leaves[name] += int(count)
    total = sum(leaves.values())
    return total, [
        (name, count / total) for name, count in leaves.most_common(TOP_FUNCTIONS)
    ] if total else []


def run(source: Path, concurrency: int, requests: int, out_dir: Path) -> dict[str, Any]:
    install_bundled(MODELS_DIR, [MODEL])
    mesh = start_mesh(MODELS_DIR, out_dir / "mesh.log", source=source, n_threads=str(THREADS))
    try:
        processes = mesh_processes(mesh)
        asyncio.run(stream_chats(mesh.base_url, 1, 2))  # loads the model; not measured
        before = {name: cpu_seconds(p) for name, p in processes.items()}
        spies = {name: start_py_spy(processes[name].pid, out_dir / f"{name}.txt") for name in PROFILED}
        time.sleep(1)  # py-spy attaches
        started = time.perf_counter()
        tokens = asyncio.run(stream_chats(mesh.base_url, concurrency, requests))
        wall = time.perf_counter() - started
        after = {name: cpu_seconds(p) for name, p in processes.items()}
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)
        for spy in spies.values():
            spy.wait(30)
    finally:
        mesh.stop()
    report: dict[str, Any] = {"tokens": tokens, "tokens_per_s": tokens / wall, "processes": {}}
    for name in processes:
        entry: dict[str, Any] = {"cpu_ms_per_token": 1000 * (after[name] - before[name]) / tokens}
        if name in PROFILED:
            samples, functions = top_functions((out_dir / f"{name}.txt").read_text())
            entry |= {"python_samples": samples, "top_functions": functions}
        report["processes"][name] = entry
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"{report['tokens']} tokens, {report['tokens_per_s']:.0f} tokens/s aggregate")
    print("| process | CPU ms per token | largest shares of its Python samples |")
    print("|---|---|---|")
    for name, entry in sorted(report["processes"].items(), key=lambda item: -item[1]["cpu_ms_per_token"]):
        shares = "; ".join(f"{function} {share:.0%}" for function, share in entry.get("top_functions", []))
        print(f"| {name} | {entry['cpu_ms_per_token']:.2f} | {shares} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=PROJECT_ROOT, help="the checkout whose mesh runs")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    out_dir = RESULTS_DIR / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True)
    report = run(args.source.resolve(), args.concurrency, args.requests, out_dir)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print_report(report)


if __name__ == "__main__":
    main()
