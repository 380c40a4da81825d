"""The benchmark drivers run for a few requests, so they cannot rot; no timing is asserted."""

from pathlib import Path

import pytest

from bench.audio_bench import run as run_audio_bench
from bench.chat_bench import SYSTEMS, ratio_lines
from bench.chat_bench import run as run_chat_bench
from bench.lease_bench import run as run_lease_bench
from bench.lora_bench import run as run_lora_bench
from bench.scaleout_bench import run as run_scaleout_bench
from bench.swap_bench import run as run_swap_bench
from tests.e2e.mesh import PROJECT_ROOT


def test_lease_bench_runs_and_reports_every_figure() -> None:
    results = run_lease_bench(leases=20, concurrency=2)
    assert set(results) == {
        "lease_round_trip_p50_ms",
        "lease_round_trip_p95_ms",
        "sequential_grants_per_s",
        "grpc_unary_p50_ms",
        "lease_p50_over_unary_p50",
        "grants_per_s_concurrency_2",
    }
    assert all(value > 0 for value in results.values())


def test_audio_bench_runs_and_reports_ratios(tmp_path: Path) -> None:
    results = run_audio_bench(
        rounds=1, models_dir=PROJECT_ROOT / ".cache" / "test-models", log_path=tmp_path / "log"
    )
    assert results["tts_mesh_over_in_process"] > 0 and results["asr_mesh_over_in_process"] > 0


def test_chat_bench_runs_its_systems_and_writes_its_reports(tmp_path: Path) -> None:
    # llama-server needs a 15-minute build (`make bench-deps`): `make bench` runs it
    systems = tuple(s for s in SYSTEMS if s != "llama_server")
    report = run_chat_bench(rounds=1, requests=2, levels=[2], max_tokens=8, out_dir=tmp_path, systems=systems)
    level = report["summary"]["2"]
    assert set(level) == set(systems)
    assert all(figures["errors"] == 0 and figures["aggregate_tokens_per_s"] > 0 for figures in level.values())
    assert {p.name for p in tmp_path.iterdir()} >= {"chat.json", "chat.md", "chat.png"}
    assert any(line.startswith("c=2 mesh_rest aggregate_ratio=") for line in ratio_lines(report["summary"]))


def test_swap_bench_runs_and_reports_swap_over_raw_load(tmp_path: Path) -> None:
    results = run_swap_bench(
        rounds=1, models_dir=PROJECT_ROOT / ".cache" / "test-models", log_path=tmp_path / "log"
    )
    assert results["gemma-3-270m_raw_load_s"] > 0
    assert "smollm2-135m-instruct_swap_over_raw_load" in results


def test_scaleout_bench_runs_both_routings_and_ends_with_their_ratio(tmp_path: Path) -> None:
    results = run_scaleout_bench(
        rounds=1,
        models_dir=PROJECT_ROOT / ".cache" / "test-models",
        log_path=tmp_path / "log",
        clients=2,
        requests=2,
        latency_samples=20,
    )
    assert list(results)[-1] == "model_aware_over_round_robin"
    assert results["picker_requests_per_s"] > 0 and results["round_robin_requests_per_s"] > 0
    assert {"picker_swaps", "round_robin_swaps", "picker_added_latency_p99_ms"} <= set(results)


@pytest.mark.timeout(900)  # builds the adapter when tests/e2e/test_lora.py has not (a few minutes, once)
def test_lora_bench_measures_mixed_adapter_batches_against_one_set(tmp_path: Path) -> None:
    results = run_lora_bench(rounds=1, models_dir=tmp_path / "models", log_path=tmp_path / "log")
    assert results["base_x4_tok_s"] > 0 and results["adapter_x4_tok_s"] > 0
    assert {"mixed_turn1_over_base", "mixed_turn8_over_base", "adapter_over_base"} <= set(results)
