"""PiperBackend: fast local text-to-speech with Piper voices (ONNX)."""

import threading
from collections.abc import Iterator

import onnxruntime
from piper import PiperVoice, SynthesisConfig

from multai.registry import ModelManifest
from services.audio.backends.base import OPENAI_VOICES, PcmChunk, UnknownVoiceError


class PiperBackend:
    """One Piper voice model (.onnx plus its .onnx.json); multi-speaker voices expose their speakers."""

    def __init__(self, manifest: ModelManifest) -> None:
        self._manifest = manifest
        self._voice: PiperVoice | None = None
        voices = manifest.defaults.get("voices", [manifest.id])
        self._voices = [str(v) for v in voices] if isinstance(voices, list) else [str(voices)]

    def voices(self) -> list[str]:
        return list(self._voices)

    def resolve_voice(self, voice: str) -> str:
        if voice in self._voices:
            return voice
        if voice in OPENAI_VOICES:
            # OpenAI's names spread over the model's voices in a fixed order.
            return self._voices[OPENAI_VOICES.index(voice) % len(self._voices)]
        raise UnknownVoiceError(voice, sorted({*OPENAI_VOICES, *self._voices}))

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        use_cuda = use_gpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        self._voice = PiperVoice.load(
            self._manifest.file_path(0), config_path=self._manifest.file_path(1), use_cuda=use_cuda
        )
        return self._manifest.size_bytes

    def unload(self) -> None:
        self._voice = None

    def synthesize(self, text: str, voice: str, speed: float, cancel: threading.Event) -> Iterator[PcmChunk]:
        if self._voice is None:
            raise RuntimeError(f"model {self._manifest.id} is not loaded")
        speaker = self._voices.index(voice) if len(self._voices) > 1 else None
        # Piper's length scale is the inverse of speed: 2x speed halves every phoneme's length.
        config = SynthesisConfig(speaker_id=speaker, length_scale=1.0 / speed)
        for chunk in self._voice.synthesize(text, config):
            if cancel.is_set():
                return
            yield PcmChunk(chunk.audio_int16_array, chunk.sample_rate)
