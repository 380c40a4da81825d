"""Soak: thousands of short requests through the mesh leave one stream as fast as on the fresh mesh.

The measurement is bench/soak_bench.py's (`make bench` prints the same ratios); each test compares the same
mesh before and after its soak, in one run.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.soak_bench import audio_soak, chat_soak
from tests.e2e.mesh import Mesh, start_mesh


@pytest.fixture(scope="module")
def soak_mesh(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    running = start_mesh(models_dir, tmp_path_factory.mktemp("soak") / "serve.log")
    yield running
    running.stop()


def test_chat_stream_keeps_its_speed_after_2000_requests(soak_mesh: Mesh) -> None:
    fresh, aged = chat_soak(soak_mesh.base_url, measurements=3)
    assert aged >= 0.9 * fresh, f"{aged:.0f} tok/s after the soak against {fresh:.0f} fresh"


def test_transcription_keeps_its_speed_after_the_audio_soak(soak_mesh: Mesh) -> None:
    fresh, aged = audio_soak(soak_mesh.base_url, measurements=7)
    assert aged >= 0.9 * fresh, f"{aged:.1f} transcriptions/s after the soak against {fresh:.1f} fresh"
