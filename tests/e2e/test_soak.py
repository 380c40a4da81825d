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
    folder = tmp_path_factory.mktemp("soak")
    running = start_mesh(models_dir, folder / "serve.log", node_services='["chat", "audio"]')
    yield running
    running.stop()


# The slowdown this guards against made the mesh 2.7x slower (0.37) after a few thousand requests. Two
# best-of-7 measurements seconds apart, with nothing run between them, differed by 11% on a 2-core machine
# (best-of-15 ones by 8%), so a bar of 0.9 failed two recent full runs (at 0.87) with no slowdown at all.
KEPT_SPEED = 0.8
# A CI run measured 0.76 once; on this machine three soaks on one mesh then gave 0.95 to 1.1, with single
# streams between 105 and 144 tok/s. That slowdown was the machine's and passes; the one guarded against is
# the soaked process's and lasts, so a low figure is measured again, a while later, before it counts.
RECHECKS = 3
RECHECK_PAUSE_S = 10.0


def test_chat_stream_keeps_its_speed_after_2000_requests(soak_mesh: Mesh) -> None:
    soaked = chat_soak(soak_mesh.base_url, measurements=5)
    aged = soaked.recheck(KEPT_SPEED, RECHECKS, RECHECK_PAUSE_S)
    assert aged >= KEPT_SPEED * soaked.fresh, (
        f"{aged:.0f} tok/s after the soak against {soaked.fresh:.0f} fresh"
    )


def test_transcription_keeps_its_speed_after_the_audio_soak(soak_mesh: Mesh) -> None:
    soaked = audio_soak(soak_mesh.base_url, measurements=15)
    aged = soaked.recheck(KEPT_SPEED, RECHECKS, RECHECK_PAUSE_S)
    assert aged >= KEPT_SPEED * soaked.fresh, (
        f"{aged:.1f} transcriptions/s after the soak against {soaked.fresh:.1f} fresh"
    )
