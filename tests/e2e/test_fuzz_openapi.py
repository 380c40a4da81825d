"""The bridge against its own /openapi.json: a bounded schemathesis run finds no server error, no status
code or media type the schema does not document, and no response that breaks its documented schema.

It runs a mesh of its own, with an API key (the schema declares bearer auth, and schemathesis checks that
requests without it are refused) and small work limits, so that the generated requests that are valid
finish in seconds: a 256-token context for the chat models and a small image budget.
"""

import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from tests.e2e.mesh import PROJECT_ROOT, Mesh, start_mesh

FUZZ_CONTEXT_LENGTH = 256
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "ignored_auth",
)
# Per operation; with the coverage phase's boundary values this is ~1,500 requests in a few minutes.
MAX_EXAMPLES = 25
SEED = 20261201


def short_context_models(source: Path, target: Path) -> Path:
    """The test models, linked, with the GGUF models' context cut to FUZZ_CONTEXT_LENGTH."""
    target.mkdir()
    for folder in source.iterdir():
        manifest = tomllib.loads((folder / "model.toml").read_text())
        if "context_length" not in manifest.get("defaults", {}):
            (target / folder.name).symlink_to(folder)
            continue
        copy = target / folder.name
        copy.mkdir()
        for item in folder.iterdir():
            if item.name != "model.toml":
                (copy / item.name).symlink_to(item)
        manifest["defaults"]["context_length"] = FUZZ_CONTEXT_LENGTH
        (copy / "model.toml").write_text(tomli_w.dumps(manifest))
    return target


@pytest.fixture(scope="module")
def fuzz_mesh(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    folder = tmp_path_factory.mktemp("fuzz")
    models = short_context_models(models_dir, folder / "models")
    running = start_mesh(models, folder / "serve.log", max_megapixel_steps="1")
    yield running
    running.stop()


def test_schemathesis_finds_nothing_undocumented(fuzz_mesh: Mesh, tmp_path: Path) -> None:
    state = ["--state-dir", str(fuzz_mesh.certs_dir.parent)]
    key = subprocess.run(
        [sys.executable, "-m", "multai.cli", "keys", "create", "fuzz", *state],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    ).stdout.strip()
    time.sleep(1.5)  # the bridge reloads keys every second
    root = fuzz_mesh.base_url.removesuffix("/v1")
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--no-color",
            "run",
            f"{root}/openapi.json",
            "--url",
            root,
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "2",
            "--request-timeout",
            "120",
            "--header",
            f"Authorization: Bearer {key}",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=tmp_path,
        env=dict(os.environ, SCHEMATHESIS_HOOKS=str(Path(__file__).with_name("fuzz_hooks.py"))),
    )
    assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-4000:]
    # The mesh is still whole after the run.
    assert "Traceback" not in fuzz_mesh.log().split("mesh ready", 1)[-1]
