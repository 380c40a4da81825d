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


# The slowdown this guards against made the mesh 2.7x slower (0.37) after a few thousand requests. Two
# best-of-7 measurements seconds apart, with nothing run between them, differed by 11% on a 2-core machine
# (best-of-15 ones by 8%), so a bar of 0.9 failed two recent full runs (at 0.87) with no slowdown at all.
KEPT_SPEED = 0.8


def test_chat_stream_keeps_its_speed_after_2000_requests(soak_mesh: Mesh) -> None:
    fresh, aged = chat_soak(soak_mesh.base_url, measurements=5)
    assert aged >= KEPT_SPEED * fresh, f"{aged:.0f} tok/s after the soak against {fresh:.0f} fresh"


def test_transcription_keeps_its_speed_after_the_audio_soak(soak_mesh: Mesh) -> None:
    fresh, aged = audio_soak(soak_mesh.base_url, measurements=15)
    assert aged >= KEPT_SPEED * fresh, f"{aged:.1f} transcriptions/s after the soak against {fresh:.1f} fresh"
