"""Protobuf answers as the fields of OpenAI's JSON objects, read once for the REST bridge and the client.

Each side validates these plain fields into its own pydantic class, so that what the two show a caller
cannot drift apart.
"""

import base64
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from multai.audio.v1 import audio_pb2
from multai.common.v1 import common_pb2

DEVICE_NAMES = {common_pb2.DEVICE_CPU: "cpu", common_pb2.DEVICE_GPU: "gpu"}


def model_fields(info: common_pb2.ModelInfo) -> dict[str, Any]:
    """OpenAI's model object (id, created) with MultAI's additions; `resident` is None when not loaded, and
    `parent` names an adapter's base model (as vLLM lists LoRA adapters), None for a model of its own."""
    return {
        "id": info.id,
        "created": info.created,
        "aliases": list(info.aliases),
        "modality": info.modality,
        "backend": info.backend,
        "fixture": info.fixture,
        "resident": DEVICE_NAMES.get(info.resident_device),
        "parent": info.parent or None,
    }


def embedding_vector(values: Sequence[float], encoding_format: str | None) -> list[float] | str:
    """A vector as floats, or for "base64" as base64 of little-endian float32 (what OpenAI sends)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return list(values)


def verbose_transcript_fields(
    transcript: audio_pb2.Transcript, granularities: Iterable[str]
) -> dict[str, Any]:
    """verbose_json's fields: segments unless only words were asked for, words only when asked for."""
    wanted = set(granularities) or {"segment"}
    segments = [
        {
            "id": s.id,
            "seek": s.seek,
            "start": s.start,
            "end": s.end,
            "text": s.text,
            "tokens": list(s.tokens),
            "temperature": s.temperature,
            "avg_logprob": s.avg_logprob,
            "compression_ratio": s.compression_ratio,
            "no_speech_prob": s.no_speech_prob,
        }
        for s in transcript.segments
    ]
    words = [{"word": w.word, "start": w.start, "end": w.end} for w in transcript.words]
    return {
        "language": transcript.language,
        "duration": transcript.duration,
        "text": transcript.text,
        "segments": segments if "segment" in wanted else None,
        "words": words if "word" in wanted else None,
    }
