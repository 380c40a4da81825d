"""Session fixtures: the default models installed once, and one running mesh."""

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from multai.bundled_models import install_bundled
from tests.e2e.mesh import PROJECT_ROOT, Mesh, start_mesh


@pytest.fixture(scope="session")
def models_dir() -> Path:
    folder = PROJECT_ROOT / ".cache" / "test-models"
    install_bundled(folder)
    return folder


@pytest.fixture(scope="session")
def mesh(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    running = start_mesh(models_dir, tmp_path_factory.mktemp("mesh") / "serve.log")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def client(mesh: Mesh) -> openai.OpenAI:
    return openai.OpenAI(base_url=mesh.base_url, api_key="not-needed", max_retries=0, timeout=120)
