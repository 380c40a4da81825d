"""The command line the mesh benchmarks share: rounds in, figures out (printed, and as JSON if asked)."""

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from tests.e2e.mesh import PROJECT_ROOT

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
MODELS_DIR = PROJECT_ROOT / ".cache" / "bench-models"

MeshBench = Callable[[int, Path, Path], dict[str, float]]


def run_mesh_bench(doc: str | None, name: str, default_rounds: int, run: MeshBench) -> None:
    """Parses --rounds and --json, runs `run(rounds, models_dir, mesh_log)`, prints one figure a line."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=default_rounds)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results = run(args.rounds, MODELS_DIR, RESULTS_DIR / f"{name}-mesh.log")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    for figure, value in results.items():
        print(f"{figure}: {value:.3f}")
