"""BarkBackend on the bark-tiny-random fixture: the loading and generation path of real bark-small folders."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from multai.fixtures.bark import build_bark_fixture
from multai.registry import read_manifest
from services.audio.backends.bark import BarkBackend
from services.audio.backends.base import OPENAI_VOICES, PcmChunk, UnknownVoiceError

SENTENCES = "Hello there. How are you?"


@pytest.fixture(scope="module")
def fixture_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "bark-tiny-random"
    started = time.monotonic()
    build_bark_fixture(folder)
    assert time.monotonic() - started < 30
    return folder


@pytest.fixture(scope="module")
def backend(fixture_folder: Path):
    bark = BarkBackend(read_manifest(fixture_folder))
    assert bark.load(use_gpu=False, gpu_layers=0) > 0
    yield bark
    bark.unload()


def synthesize(backend: BarkBackend, voice: str = "alloy", speed: float = 1.0) -> list[PcmChunk]:
    return list(backend.synthesize(SENTENCES, voice, speed, threading.Event()))


def test_manifest_marks_a_complete_fixture(fixture_folder):
    manifest = read_manifest(fixture_folder)
    assert manifest.fixture
    assert (manifest.id, manifest.modality, manifest.backend) == ("bark-tiny-random", "audio", "bark")
    assert {"config.json", "generation_config.json", "model.safetensors"} <= set(manifest.files)
    assert "speaker_embeddings_path.json" in manifest.files
    assert manifest.size_bytes == sum((fixture_folder / name).stat().st_size for name in manifest.files)
    assert "v2/es_speaker_8" in manifest.defaults["voices"]


def test_second_build_leaves_the_folder_alone(fixture_folder):
    before = (fixture_folder / "model.toml").stat().st_mtime_ns
    started = time.monotonic()
    assert build_bark_fixture(fixture_folder) == fixture_folder
    assert time.monotonic() - started < 0.5
    assert (fixture_folder / "model.toml").stat().st_mtime_ns == before


def test_synthesizes_one_int16_chunk_per_sentence(backend):
    chunks = synthesize(backend)
    assert len(chunks) >= 2
    for chunk in chunks:
        assert isinstance(chunk, PcmChunk)
        assert chunk.samples.dtype == np.int16
        assert chunk.samples.size > 0
        assert chunk.sample_rate > 0


def test_same_request_gives_the_same_samples(backend):
    first, second = synthesize(backend), synthesize(backend)
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.samples, b.samples)


def test_openai_voices_map_to_english_presets_in_order(backend):
    assert backend.resolve_voice("alloy") == "v2/en_speaker_0"
    assert backend.resolve_voice("ash") == "v2/en_speaker_1"
    assert backend.resolve_voice(OPENAI_VOICES[10]) == "v2/en_speaker_0"
    assert backend.resolve_voice("v2/en_speaker_6") == "v2/en_speaker_6"


def test_spanish_preset_is_accepted(backend):
    assert backend.resolve_voice("v2/es_speaker_8") == "v2/es_speaker_8"
    chunks = list(backend.synthesize("Hola.", "v2/es_speaker_8", 1.0, threading.Event()))
    assert len(chunks) == 1 and chunks[0].samples.size > 0


def test_double_speed_halves_the_samples(backend):
    normal = sum(chunk.samples.size for chunk in synthesize(backend, speed=1.0))
    fast = sum(chunk.samples.size for chunk in synthesize(backend, speed=2.0))
    assert fast == pytest.approx(normal / 2, abs=2)


def test_unknown_voice_lists_the_valid_ones(backend):
    with pytest.raises(UnknownVoiceError) as error:
        synthesize(backend, voice="nobody")
    assert "alloy" in str(error.value) and "v2/en_speaker_0" in str(error.value)
    assert "v2/es_speaker_8" in error.value.valid


def test_cancelled_request_yields_nothing(backend):
    cancel = threading.Event()
    cancel.set()
    assert list(backend.synthesize(SENTENCES, "alloy", 1.0, cancel)) == []


def test_cancelling_mid_request_stops_before_the_next_sentence(backend):
    cancel = threading.Event()
    chunks = []
    for chunk in backend.synthesize(SENTENCES, "alloy", 1.0, cancel):
        chunks.append(chunk)
        cancel.set()
    assert len(chunks) == 1
