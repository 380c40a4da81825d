"""Model-aware routing (the endpoint picker) against plain round robin, across two node groups, in one run.

`multai serve --nodes 2` runs two node groups, each with its own scheduler, chat service and bridge, and a
RAM budget that holds one of the two chat models: the topology of two GPU nodes. Its edge routes through the
picker on one port and round robin on another, so both see the same nodes, in alternating phases. Each
phase sends the same alternating A/B workload from a few concurrent clients; the figures are aggregate
requests per second and the swaps (evictions) the schedulers' metrics report.

The picker's added latency is that of a small request (a chat-sized JSON body to a route the bridge answers
at once, 405) through the picker's listener minus through the round-robin one: Envoy's ext_proc round trip,
the body's parsing and the decision.

    python -m bench.scaleout_bench [--rounds N] [--json PATH]

The last line is `model_aware_over_round_robin=<aggregate throughput ratio>`.
"""

import argparse
import json
import re
import statistics
import threading
import time
from pathlib import Path

import httpx
import openai

from bench.cli import MODELS_DIR, RESULTS_DIR
from multai.bundled_models import install_bundled
from multai.ports import free_port
from tests.e2e.mesh import start_mesh

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
CLIENTS = 4
REQUESTS_PER_CLIENT = 6
MAX_TOKENS = 16
LATENCY_SAMPLES = 200
PROMPT = [{"role": "user", "content": "Name three colours of the sea."}]


def _evictions(urls: list[str]) -> float:
    total = 0.0
    for url in urls:
        match = re.search(r"^multai_scheduler_evictions_total (\S+)$", httpx.get(url, timeout=10).text, re.M)
        total += float(match[1]) if match else 0.0
    return total


def _phase(base_url: str, metrics_urls: list[str], clients: int, requests: int) -> tuple[float, float]:
    """Requests per second and swaps of one phase: each client alternates A and B, shifted by its index."""
    client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600)
    errors: list[Exception] = []

    def work(index: int) -> None:
        for n in range(requests):
            model = MODELS[(n + n // 2 + index) % 2]  # A B B A A B ... from a different start per client
            try:
                client.chat.completions.create(model=model, messages=PROMPT, max_tokens=MAX_TOKENS)
            except openai.APIError as exc:
                errors.append(exc)

    before = _evictions(metrics_urls)
    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return clients * requests / elapsed, _evictions(metrics_urls) - before


def _latencies(url: str, samples_wanted: int) -> list[float]:
    body = {"model": MODELS[0], "messages": PROMPT, "max_tokens": MAX_TOKENS}
    samples = []
    with httpx.Client(timeout=30) as http:
        for _ in range(samples_wanted):
            started = time.perf_counter()
            http.post(url, json=body)
            samples.append(time.perf_counter() - started)
    return samples


def _percentile(samples: list[float], share: float) -> float:
    return statistics.quantiles(samples, n=100)[round(share * 100) - 1]


def run(
    rounds: int,
    models_dir: Path,
    log_path: Path,
    clients: int = CLIENTS,
    requests: int = REQUESTS_PER_CLIENT,
    latency_samples: int = LATENCY_SAMPLES,
) -> dict[str, float]:
    """Figures of `rounds` picker phases and as many round-robin phases, alternating."""
    install_bundled(models_dir, list(MODELS))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    round_robin_port = free_port()
    mesh = start_mesh(
        models_dir,
        log_path,
        nodes="2",
        node_services='["chat"]',
        bridge_port=str(free_port()),
        edge_admin_port=str(free_port()),
        picker_port=str(free_port()),
        edge_round_robin_port=str(round_robin_port),
    )
    try:
        nodes = json.loads((log_path.parent / "state" / "nodes.json").read_text())
        metrics_urls = [node["scheduler_metrics"] for node in nodes]
        urls = {"picker": mesh.base_url, "round_robin": f"http://127.0.0.1:{round_robin_port}/v1"}
        throughput: dict[str, list[float]] = {name: [] for name in urls}
        swaps: dict[str, float] = dict.fromkeys(urls, 0.0)
        _phase(urls["picker"], metrics_urls, clients, 2)  # warm-up: both models loaded, one on each node
        for _ in range(rounds):
            for name, url in urls.items():
                rate, swapped = _phase(url, metrics_urls, clients, requests)
                throughput[name].append(rate)
                swaps[name] += swapped
        latency = {
            name: _latencies(url.removesuffix("/v1") + "/healthz", latency_samples)
            for name, url in urls.items()
        }
    finally:
        mesh.stop()
    picker_rate, round_robin_rate = (statistics.median(throughput[name]) for name in urls)
    added = {
        share: _percentile(latency["picker"], share) - _percentile(latency["round_robin"], share)
        for share in (0.5, 0.99)
    }
    return {
        "requests_per_system": rounds * clients * requests,
        "picker_requests_per_s": picker_rate,
        "round_robin_requests_per_s": round_robin_rate,
        "picker_swaps": swaps["picker"],
        "round_robin_swaps": swaps["round_robin"],
        "picker_added_latency_p50_ms": added[0.5] * 1000,
        "picker_added_latency_p99_ms": added[0.99] * 1000,
        "model_aware_over_round_robin": picker_rate / round_robin_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results = run(args.rounds, MODELS_DIR, RESULTS_DIR / "scaleout" / "serve.log")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    for figure, value in results.items():
        print(f"{figure}={value:.3f}")


if __name__ == "__main__":
    main()
