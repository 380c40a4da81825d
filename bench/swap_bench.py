"""Model swap time through the mesh vs the raw load time of the same models in-process.

The mesh runs with a RAM budget that holds one of the two chat models, so a request for the other one
makes the scheduler unload the first (the owner confirms) and the service load the second. The swap is
timed as the latency of a 1-token request that needs it, minus that of a 1-token request that does not;
the raw figure is the chat service's own load of the same model in this process (LlamaCppBackend, the
same context length and slots as the mesh), so the ratio is the cost of the swap's round trips.

    python -m bench.swap_bench [--rounds N] [--json PATH]
"""

import statistics
import time
from pathlib import Path

import openai

from bench.cli import run_mesh_bench
from multai.bundled_models import install_bundled
from multai.registry import ModelManifest, read_manifest
from services.chat.backends.llama_cpp import LlamaCppBackend
from tests.e2e.mesh import SWAP_RAM_BUDGET_BYTES, start_mesh

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
THREADS = 2
CONTEXT_LENGTH = 2048
PARALLEL = 4


def raw_load_seconds(manifest: ModelManifest) -> float:
    """The chat service's own load of the model (weights, a context with all slots' KV cells), in-process."""
    backend = LlamaCppBackend(manifest, THREADS, CONTEXT_LENGTH, PARALLEL)
    started = time.perf_counter()
    backend.load(use_gpu=False, gpu_layers=0)
    elapsed = time.perf_counter() - started
    backend.unload()
    return elapsed


def run(rounds: int, models_dir: Path, log_path: Path) -> dict[str, float]:
    """Median swap and raw load times over `rounds` alternations; ratio swap / raw load."""
    install_bundled(models_dir, list(MODELS))
    raw = {
        m: statistics.median(raw_load_seconds(read_manifest(models_dir / m)) for _ in range(rounds))
        for m in MODELS
    }
    mesh = start_mesh(
        models_dir,
        log_path,
        n_threads=str(THREADS),
        context_length=str(CONTEXT_LENGTH),
        parallel=str(PARALLEL),
        ram_budget_bytes=str(SWAP_RAM_BUDGET_BYTES),
    )
    try:
        client = openai.OpenAI(base_url=mesh.base_url, api_key="bench", max_retries=0, timeout=120)

        def one_token(model: str) -> float:
            started = time.perf_counter()
            client.completions.create(model=model, prompt="Hello", max_tokens=1, temperature=0)
            return time.perf_counter() - started

        one_token(MODELS[0])
        swaps: dict[str, list[float]] = {m: [] for m in MODELS}
        for _ in range(rounds):
            for model in (MODELS[1], MODELS[0]):
                with_swap = one_token(model)
                warm = one_token(model)
                swaps[model].append(with_swap - warm)
    finally:
        mesh.stop()
    results: dict[str, float] = {}
    for model in MODELS:
        swap = statistics.median(swaps[model])
        results[f"{model}_raw_load_s"] = raw[model]
        results[f"{model}_swap_in_s"] = swap
        results[f"{model}_swap_over_raw_load"] = swap / raw[model]
    return results


if __name__ == "__main__":
    run_mesh_bench(__doc__, "swap", 5, run)
