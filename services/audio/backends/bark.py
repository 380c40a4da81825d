"""Bark text-to-speech through transformers, from a local folder in suno/bark-small's layout."""

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import BarkModel, BarkProcessor

from multai.registry import ModelManifest
from multai.torch_runtime import leased_device, release_device_memory, seeded_generation, weights_dtype
from services.audio.backends.base import OPENAI_VOICES, PcmChunk, UnknownVoiceError

DEFAULT_SAMPLE_RATE = 24_000
# Bark samples its tokens; a fixed seed for every sentence makes the same request give the same audio.
GENERATION_SEED = 0
# The presets the OpenAI voice names map to, in order; a model without them falls back to all its presets.
ENGLISH_PRESET_PREFIX = "v2/en_speaker_"
SPEAKER_EMBEDDINGS_FILE = "speaker_embeddings_path.json"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
INT16_MAX = np.iinfo(np.int16).max


def split_sentences(text: str) -> list[str]:
    """The sentences of text, split after '.', '!' or '?'; Bark speaks ~13 s at most per generation."""
    return [sentence for sentence in SENTENCE_END.split(text.strip()) if sentence]


def change_speed(waveform: npt.NDArray[np.float32], speed: float) -> npt.NDArray[np.float32]:
    """Resamples waveform to len/speed samples; this raises the pitch along with the tempo."""
    if speed == 1.0 or waveform.size < 2:
        return waveform
    length = max(1, round(waveform.size / speed))
    positions = np.linspace(0, waveform.size - 1, length)
    return np.interp(positions, np.arange(waveform.size), waveform).astype(np.float32)


def to_int16(waveform: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    """Float samples in [-1, 1] as int16; out-of-range samples are clipped."""
    return (np.clip(waveform, -1.0, 1.0) * INT16_MAX).astype(np.int16)


class BarkBackend:
    """Suno's Bark: a voice preset per speaker, one generation per sentence."""

    def __init__(self, manifest: ModelManifest) -> None:
        self.manifest = manifest
        self._model: BarkModel | None = None
        self._processor: BarkProcessor | None = None
        self._device = torch.device("cpu")

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        """Loads the model and its processor; Bark cannot be split by layers, so gpu_layers is ignored."""
        self._device = leased_device(use_gpu)
        # Local paths and local_files_only: loading never reaches for the Hub.
        model = BarkModel.from_pretrained(
            self.manifest.folder, dtype=weights_dtype(self._device), local_files_only=True
        )
        self._model = model.to(self._device).eval()  # type: ignore[arg-type]  # transformers mistypes to()
        self._processor = BarkProcessor.from_pretrained(str(self.manifest.folder), local_files_only=True)
        return sum(p.numel() * p.element_size() for p in self._model.parameters())

    def unload(self) -> None:
        """Drops the model; the GPU cache is emptied so the memory is visible as free."""
        self._model = None
        self._processor = None
        release_device_memory(self._device)

    def voices(self) -> list[str]:
        """The voice presets, sorted: the loaded processor's, else the manifest's, else the folder's."""
        if self._processor is not None:
            return sorted(self._processor.available_voice_presets)
        listed = self.manifest.defaults.get("voices")
        if isinstance(listed, list):
            return sorted(listed)
        embeddings_path = self.manifest.folder / SPEAKER_EMBEDDINGS_FILE
        if not embeddings_path.is_file():
            return []
        presets = json.loads(embeddings_path.read_text(encoding="utf-8"))
        return sorted(name for name in presets if name != "repo_or_path")

    def resolve_voice(self, voice: str) -> str:
        """A preset name as is; an OpenAI voice name as an English preset, the same one every time."""
        presets = self.voices()
        if voice in presets:
            return voice
        targets = [p for p in presets if p.startswith(ENGLISH_PRESET_PREFIX)] or presets
        if voice in OPENAI_VOICES and targets:
            return targets[OPENAI_VOICES.index(voice) % len(targets)]
        raise UnknownVoiceError(voice, valid=sorted([*OPENAI_VOICES, *presets]))

    def synthesize(self, text: str, voice: str, speed: float, cancel: threading.Event) -> Iterator[PcmChunk]:
        """Yields one chunk per sentence; `speed` resamples the audio, since Bark has no speed control."""
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        preset = self.resolve_voice(voice)
        for sentence in split_sentences(text):
            if cancel.is_set():
                return
            waveform, sample_rate = self._generate(sentence, preset)
            yield PcmChunk(to_int16(change_speed(waveform, speed)), sample_rate)

    def _generate(self, sentence: str, preset: str) -> tuple[npt.NDArray[np.float32], int]:
        """One sentence as float samples, and their sample rate."""
        if self._model is None or self._processor is None:
            raise RuntimeError("BarkBackend.synthesize called before load()")
        model = self._model
        inputs = self._processor(sentence, voice_preset=preset)
        history_prompt = {key: value.to(self._device) for key, value in inputs.pop("history_prompt").items()}
        tensors: dict[str, Any] = {key: value.to(self._device) for key, value in inputs.items()}
        generation_config = model.generation_config
        # BarkModel.generate passes min_eos_p=None to the semantic model unless given, which would ignore
        # the early stop that generation_config.json asks for.
        min_eos_p = getattr(generation_config, "semantic_config", {}).get("min_eos_p")
        # Bark is meant to be sampled, as Suno's reference does; greedy decoding tends to loop.
        with seeded_generation(GENERATION_SEED, self._device), torch.inference_mode():
            audio = model.generate(
                **tensors, history_prompt=history_prompt, do_sample=True, min_eos_p=min_eos_p
            )
        waveform = audio[0].float().cpu().numpy()
        return waveform, int(getattr(generation_config, "sample_rate", None) or DEFAULT_SAMPLE_RATE)
