"""What serving LoRA adapters costs in the batch engine: 4 streams of the base model, 4 of an adapter, and
2 + 2 mixed (two adapter sets, whose groups take turns), in-process on the chat service's own backend.

Every stream generates exactly `--tokens` tokens (the end-of-sequence tokens are banned), so the figures are
tokens per second of the whole batch. The mixed case is run with several turn lengths (TURN_STEPS), to show
what the switching itself costs against a batch that holds one set.

    python -m bench.lora_bench [--rounds N] [--json PATH]
"""

import asyncio
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from bench.cli import run_mesh_bench
from multai.bundled_models import install_bundled
from multai.fixtures.signoff_lora import ADAPTER_CACHE, BASE_MODEL_ID, build_signoff_adapter
from multai.model_import import add_model
from multai.registry import MANIFEST_NAME, ModelRegistry
from services.chat.backends import llama_batch
from services.chat.backends.base import Finished, GenerationParams
from services.chat.backends.llama_cpp import LlamaCppBackend, LlamaLoraBackend

ADAPTER_ID = "smollm2-signoff"
THREADS = 2
TOKENS = 64
PROMPT = "Once upon a time, in a land far away, there lived"
TURN_LENGTHS = (1, 4, 8, 16)


async def _stream(backend: LlamaCppBackend | LlamaLoraBackend, params: GenerationParams) -> int:
    stream = await backend.open_completion(PROMPT, params)
    generated = 0
    while events := await stream.next_events():
        generated += sum(e.completion_tokens for e in events if isinstance(e, Finished))
    await stream.aclose()
    return generated


async def _tokens_per_second(
    backends: Sequence[LlamaCppBackend | LlamaLoraBackend], params: GenerationParams
) -> float:
    started = time.perf_counter()
    counts = await asyncio.gather(*(_stream(b, params) for b in backends))
    return sum(counts) / (time.perf_counter() - started)


def _adapter_models(models_dir: Path) -> ModelRegistry:
    install_bundled(models_dir, [BASE_MODEL_ID])
    if not (models_dir / ADAPTER_ID / MANIFEST_NAME).is_file():
        adapter = build_signoff_adapter(ADAPTER_CACHE, models_dir / BASE_MODEL_ID / "model.gguf")
        add_model(models_dir, adapter, ADAPTER_ID, base=BASE_MODEL_ID)
    return ModelRegistry.scan(models_dir, ("chat",))


def run(rounds: int, models_dir: Path, log_path: Path) -> dict[str, float]:
    """Median batch tokens/s of each case over `rounds` runs, and the mixed cases' share of the base's."""
    registry = _adapter_models(models_dir)
    base = LlamaCppBackend(registry.resolve(BASE_MODEL_ID), THREADS, 2048, 4)
    base.load(use_gpu=False, gpu_layers=0)
    adapter = base.adapter_backend(registry.resolve(ADAPTER_ID))
    adapter.load(use_gpu=False, gpu_layers=0)
    ends = {0: -100.0, 2: -100.0}  # SmolLM2's end-of-text and end-of-turn tokens
    params = GenerationParams(temperature=0.0, max_tokens=TOKENS, logit_bias=ends)
    cases: dict[str, Sequence[LlamaCppBackend | LlamaLoraBackend]] = {
        "base_x4": [base] * 4,
        "adapter_x4": [adapter] * 4,
        "mixed_2_2": [base, adapter, base, adapter],
    }
    results: dict[str, float] = {}
    default_turn = llama_batch.TURN_STEPS
    try:
        asyncio.run(_tokens_per_second([base, adapter], params))  # warm-up
        for name, backends in cases.items():
            turns = TURN_LENGTHS if name == "mixed_2_2" else (llama_batch.TURN_STEPS,)
            for turn in turns:
                llama_batch.TURN_STEPS = turn
                figures = [asyncio.run(_tokens_per_second(backends, params)) for _ in range(rounds)]
                label = f"{name}_turn{turn}_tok_s" if name == "mixed_2_2" else f"{name}_tok_s"
                results[label] = statistics.median(figures)
    finally:
        llama_batch.TURN_STEPS = default_turn
        base.unload()
    for turn in TURN_LENGTHS:
        results[f"mixed_turn{turn}_over_base"] = (
            results[f"mixed_2_2_turn{turn}_tok_s"] / results["base_x4_tok_s"]
        )
    results["adapter_over_base"] = results["adapter_x4_tok_s"] / results["base_x4_tok_s"]
    return results


if __name__ == "__main__":
    run_mesh_bench(__doc__, "lora", 3, run)
