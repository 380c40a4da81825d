"""Audio in and out: decoding uploads for Whisper, encoding synthesised speech in OpenAI's formats."""

import io
import struct
from typing import cast

import av
import numpy as np
import numpy.typing as npt
from faster_whisper.audio import decode_audio

from multai.openai.audio import SPEECH_CONTENT_TYPES
from services.audio.backends.base import WHISPER_SAMPLE_RATE, PcmChunk

# OpenAI's speech endpoint returns 24 kHz mono whatever the engine's own rate.
OUTPUT_SAMPLE_RATE = 24_000
# response_format -> (PyAV container, codec) for the formats encoded as they stream.
STREAMED_FORMATS = {
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),
    "flac": ("flac", "flac"),
}


class UndecodableAudioError(ValueError):
    """The upload is not audio that FFmpeg can decode."""


def decode_for_whisper(data: bytes) -> npt.NDArray[np.float32]:
    """Any container and codec FFmpeg reads, as mono float32 at 16 kHz."""
    try:
        audio = decode_audio(io.BytesIO(data), sampling_rate=WHISPER_SAMPLE_RATE)
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise UndecodableAudioError(str(exc)) from exc
    if not isinstance(audio, np.ndarray) or audio.size == 0:
        raise UndecodableAudioError("the file holds no audio samples")
    return audio


class _ByteSink:
    """A write-only file for PyAV: the muxer's output is taken out as it is produced."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer.extend(data)
        return len(data)

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def wav_header(data_bytes: int) -> bytes:
    """A 44-byte RIFF header for 16-bit mono at OUTPUT_SAMPLE_RATE."""
    byte_rate = OUTPUT_SAMPLE_RATE * 2
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        OUTPUT_SAMPLE_RATE,
        byte_rate,
        2,
        16,
        b"data",
        data_bytes,
    )


class SpeechEncoder:
    """Encodes PCM chunks as they come: mp3, opus, aac and flac stream; pcm is raw 24 kHz s16le; wav is
    sent whole at the end so that its header carries the real length."""

    def __init__(self, response_format: str) -> None:
        if response_format not in SPEECH_CONTENT_TYPES:
            raise ValueError(f"response_format must be one of {', '.join(SPEECH_CONTENT_TYPES)}")
        self.response_format = response_format
        self.content_type = SPEECH_CONTENT_TYPES[response_format]
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=OUTPUT_SAMPLE_RATE)
        self._wav_body = bytearray()
        self._sink = _ByteSink()
        self._container: av.container.OutputContainer | None = None
        if response_format in STREAMED_FORMATS:
            container_format, codec = STREAMED_FORMATS[response_format]
            self._container = av.open(self._sink, mode="w", format=container_format)
            self._stream = cast(
                av.audio.stream.AudioStream,
                self._container.add_stream(codec, rate=OUTPUT_SAMPLE_RATE, layout="mono"),
            )

    def encode(self, chunk: PcmChunk) -> bytes:
        """The bytes ready to send after this chunk (possibly none)."""
        frame = av.AudioFrame.from_ndarray(chunk.samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = chunk.sample_rate
        return self._emit(self._resampler.resample(frame))

    def finish(self) -> bytes:
        """The last bytes: flushed encoder and trailer, or the whole wav file."""
        tail = self._emit(self._resampler.resample(None))
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            return tail + self._sink.take()
        if self.response_format == "wav":
            return wav_header(len(self._wav_body)) + bytes(self._wav_body)
        return tail

    def _emit(self, frames: list[av.AudioFrame]) -> bytes:
        pcm = b"".join(bytes(f.to_ndarray().astype("<i2").tobytes()) for f in frames)
        if self._container is not None:
            for frame in frames:
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
            return self._sink.take()
        if self.response_format == "wav":
            self._wav_body.extend(pcm)
            return b""
        return pcm
