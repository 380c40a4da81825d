"""guidellm (an established load generator, from PyPI) against the same servers as bench/chat_bench.py.

It runs offline: the prompts come from a JSONL file, so guidellm needs no tokenizer from a hub, and it
counts tokens from the servers' usage. Installed by `make bench` (the `loadgen` extra), not by `make test`.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

GUIDELLM_TIMEOUT_SECONDS = 600


def command() -> str | None:
    """The guidellm executable: beside this Python (the venv's), else on PATH; None when not installed."""
    beside = Path(sys.executable).parent / "guidellm"
    return str(beside) if beside.exists() else shutil.which("guidellm")


def available() -> bool:
    """True when guidellm is installed."""
    return command() is not None


def run(
    name: str,
    base_url: str,
    model: str,
    prompt: str,
    max_tokens: int,
    concurrency: int,
    requests: int,
    out_dir: Path,
) -> dict[str, float]:
    """One guidellm run at fixed concurrency; returns TTFT p50/p95 and output tokens/s from its JSON.

    Its start-up probe (GET /health) is off: llama_cpp.server has no such route.
    """
    prompts = out_dir / "guidellm-prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": prompt, "output_tokens_count": max_tokens}) + "\n" for _ in range(requests)
        )
    )
    result_path = out_dir / f"guidellm-{name}-c{concurrency}.json"
    subprocess.run(
        [
            command() or "guidellm",
            "run",
            "--backend",
            f"kind=openai_http,target={base_url.removesuffix('/v1')},model={model},"
            "request_format=/v1/chat/completions,validate_backend=false",
            "--profile",
            f"kind=concurrent,streams={concurrency}",
            "--constraint",
            f"kind=max_requests,count={requests}",
            "--data",
            f"kind=json_file,path={prompts}",
            "--output",
            f"kind=json,path={result_path}",
            "--disable-console",
        ],
        check=True,
        timeout=GUIDELLM_TIMEOUT_SECONDS,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        stdout=subprocess.DEVNULL,
        stderr=(out_dir / f"guidellm-{name}-c{concurrency}.log").open("wb"),
    )
    metrics = json.loads(result_path.read_text())["benchmarks"][0]["metrics"]
    ttft = metrics["time_to_first_token_ms"]["successful"]["percentiles"]
    totals = metrics["request_totals"]
    return {
        "ttft_p50_ms": float(ttft["p50"]),
        "ttft_p95_ms": float(ttft["p95"]),
        "aggregate_tokens_per_s": float(metrics["output_tokens_per_second"]["successful"]["mean"]),
        "requests_per_s": float(metrics["requests_per_second"]["successful"]["mean"]),
        "successful": float(totals["successful"]),
        "errored": float(totals["errored"]),
    }
