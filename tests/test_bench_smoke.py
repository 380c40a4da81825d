"""The benchmark drivers run (a few iterations), so they cannot rot; no timing is asserted."""

from bench.lease_bench import run


def test_lease_bench_runs_and_reports_every_figure() -> None:
    results = run(leases=20, concurrency=2)
    assert set(results) == {
        "lease_round_trip_p50_ms",
        "lease_round_trip_p95_ms",
        "sequential_grants_per_s",
        "grpc_unary_p50_ms",
        "lease_p50_over_unary_p50",
        "grants_per_s_concurrency_2",
    }
    assert all(value > 0 for value in results.values())


def test_audio_bench_runs_and_reports_ratios(tmp_path) -> None:
    from bench.audio_bench import run as run_audio
    from tests.e2e.mesh import PROJECT_ROOT

    results = run_audio(
        rounds=1, models_dir=PROJECT_ROOT / ".cache" / "test-models", log_path=tmp_path / "mesh.log"
    )
    assert results["tts_mesh_over_in_process"] > 0 and results["asr_mesh_over_in_process"] > 0
