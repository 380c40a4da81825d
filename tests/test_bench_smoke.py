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
