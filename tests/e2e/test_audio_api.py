"""The audio endpoints through the official SDK against the real mesh: Piper speaks, Whisper listens."""

import io
import re
import string
import wave

import av
import httpx
import numpy as np
import openai
import pytest

from tests.e2e.mesh import Mesh

# Chosen for words Whisper spells one way (no numbers) and Piper says clearly: see the round-trip test.
SENTENCES = [
    "Please send the report to the finance team by Friday.",
    "I would like a cup of coffee with milk, please.",
    "The weather today is sunny and warm in the city.",
]


def normalized_words(text: str) -> list[str]:
    return text.lower().translate(str.maketrans("", "", string.punctuation)).split()


def word_errors(reference: str, hypothesis: str) -> int:
    """Word-level edit distance."""
    ref, hyp = normalized_words(reference), normalized_words(hypothesis)
    distance = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        previous, distance[0] = distance[0], i
        for j, h in enumerate(hyp, start=1):
            previous, distance[j] = (
                distance[j],
                min(distance[j] + 1, distance[j - 1] + 1, previous + (r != h)),
            )
    return distance[len(hyp)]


def word_error_rate(reference: str, hypothesis: str) -> float:
    return word_errors(reference, hypothesis) / len(normalized_words(reference))


def decode_seconds(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    return sum(f.samples for f in frames) / frames[0].sample_rate


@pytest.fixture(scope="module")
def spoken(client: openai.OpenAI) -> dict[str, bytes]:
    return {
        s: client.audio.speech.create(model="tts-1", voice="alloy", input=s, response_format="wav").content
        for s in SENTENCES
    }


@pytest.fixture(scope="module")
def all_sentences_wav(client: openai.OpenAI) -> bytes:
    return client.audio.speech.create(
        model="tts-1", voice="alloy", input=" ".join(SENTENCES), response_format="wav"
    ).content


def test_speech_then_transcription_round_trip_word_error_rate(client: openai.OpenAI, spoken: dict) -> None:
    # WER over the set, as ASR is scored: Piper's synthesis is sampled, so one word in one sentence may vary.
    errors = words = 0
    for sentence, wav in spoken.items():
        text = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", wav)).text
        errors += word_errors(sentence, text)
        words += len(normalized_words(sentence))
        assert word_error_rate(sentence, text) <= 0.25, (sentence, text)
    assert errors / words <= 0.1


def test_transcription_response_formats(client: openai.OpenAI, spoken: dict) -> None:
    wav = spoken[SENTENCES[0]]
    text = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), response_format="text")
    assert isinstance(text, str) and text.endswith("\n") and "report" in text.lower()

    srt = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), response_format="srt")
    assert re.match(r"^1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n.*report", srt, re.S)

    vtt = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), response_format="vtt")
    assert re.match(r"^WEBVTT\n\n\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n.*report", vtt, re.S)

    verbose = client.audio.transcriptions.create(
        model="whisper-1",
        file=("a.wav", wav),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.language == "english"
    assert 1.5 < verbose.duration < 6
    assert verbose.segments and verbose.segments[0].end > verbose.segments[0].start
    # Word timings and the segment text can split a word differently; the letters are the same.
    assert "".join(normalized_words(" ".join(w.word for w in verbose.words))) == "".join(
        normalized_words(verbose.text)
    )
    assert word_error_rate(SENTENCES[0], verbose.text) <= 0.25
    assert all(a.start <= b.start for a, b in zip(verbose.words, verbose.words[1:], strict=False))

    only_segments = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav), response_format="verbose_json"
    )
    assert only_segments.segments and not getattr(only_segments, "words", None)


def test_language_and_prompt_are_accepted(client: openai.OpenAI, spoken: dict) -> None:
    text = client.audio.transcriptions.create(
        model="whisper-1",
        file=("a.wav", spoken[SENTENCES[1]]),
        language="en",
        prompt="Coffee order.",
        temperature=0,
    ).text
    assert word_error_rate(SENTENCES[1], text) <= 0.2
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", spoken[SENTENCES[1]]), language="xx"
        )
    assert caught.value.body["param"] == "language"


def test_translation_returns_english_and_english_only_model_refuses(
    client: openai.OpenAI, spoken: dict
) -> None:
    wav = spoken[SENTENCES[2]]
    translated = client.audio.translations.create(
        model="whisper-1", file=("a.wav", wav), response_format="verbose_json"
    )
    assert translated.language == "english"
    assert word_error_rate(SENTENCES[2], translated.text) <= 0.2
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.translations.create(model="whisper-tiny.en", file=("a.wav", wav))
    assert "whisper-base" in caught.value.body["message"]


def test_english_only_model_transcribes(client: openai.OpenAI, spoken: dict) -> None:
    text = client.audio.transcriptions.create(
        model="whisper-tiny.en", file=("a.wav", spoken[SENTENCES[0]])
    ).text
    assert word_error_rate(SENTENCES[0], text) <= 0.2


@pytest.mark.parametrize(
    ("response_format", "content_type"),
    [
        ("mp3", "audio/mpeg"),
        ("opus", "audio/ogg"),
        ("aac", "audio/aac"),
        ("flac", "audio/flac"),
        ("wav", "audio/wav"),
        ("pcm", "audio/pcm"),
    ],
)
def test_every_speech_format_decodes_with_its_content_type(
    client: openai.OpenAI, response_format: str, content_type: str
) -> None:
    response = client.audio.speech.create(
        model="tts-1", voice="nova", input="Hello world. This is a test.", response_format=response_format
    )
    assert response.response.headers["content-type"] == content_type
    data = response.content
    # OpenAI's pcm is 24 kHz, 16-bit, mono, without a header.
    seconds = len(data) / 2 / 24_000 if response_format == "pcm" else decode_seconds(data)
    assert 1.0 < seconds < 6.0
    if response_format == "wav":
        with wave.open(io.BytesIO(data)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24_000, 1, 2)
            assert w.getnframes() == (len(data) - 44) // 2


def test_speed_changes_duration(client: openai.OpenAI) -> None:
    def seconds(speed: float) -> float:
        pcm = client.audio.speech.create(
            model="tts-1",
            voice="alloy",
            input="Speed makes this shorter.",
            response_format="pcm",
            speed=speed,
        ).content
        return len(pcm) / 2 / 24_000

    assert seconds(2.0) < 0.7 * seconds(1.0)


def test_speech_streams_sentence_by_sentence(mesh: Mesh) -> None:
    text = " ".join(SENTENCES * 2)
    with httpx.stream(
        "POST",
        f"{mesh.base_url}/audio/speech",
        timeout=60,
        json={
            "model": "tts-1",
            "voice": "alloy",
            "input": text,
            "response_format": "pcm",
        },
    ) as response:
        chunks = [chunk for chunk in response.iter_raw() if chunk]
    assert len(chunks) >= len(SENTENCES) * 2
    samples = np.frombuffer(b"".join(chunks), dtype="<i2")
    assert np.abs(samples).max() > 1000


def test_long_audio_is_transcribed_end_to_end(client: openai.OpenAI, spoken: dict) -> None:
    pcm = [
        np.frombuffer(
            client.audio.speech.create(model="tts-1", voice="alloy", input=s, response_format="pcm").content,
            dtype="<i2",
        )
        for s in SENTENCES
    ]
    silence = np.zeros(24_000 * 4, dtype="<i2")
    # Over 30 s (Whisper's window): the three sentences, with pauses, three times.
    long_audio = np.concatenate([part for _ in range(3) for p in pcm for part in (p, silence)])
    assert len(long_audio) / 24_000 > 30
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(24_000)
        w.writeframes(long_audio.tobytes())
    text = client.audio.transcriptions.create(model="whisper-1", file=("long.wav", buffer.getvalue())).text
    assert word_error_rate(" ".join(SENTENCES * 3), text) <= 0.15


def test_bad_audio_inputs_are_rejected_and_the_service_stays_up(client: openai.OpenAI, spoken: dict) -> None:
    with pytest.raises(openai.BadRequestError) as not_audio:
        client.audio.transcriptions.create(model="whisper-1", file=("notes.txt", b"just some text" * 100))
    assert not_audio.value.body["param"] == "file"

    with pytest.raises(openai.APIStatusError) as too_large:
        client.audio.transcriptions.create(
            model="whisper-1", file=("big.wav", b"\0" * (25 * 1024 * 1024 + 1))
        )
    assert too_large.value.status_code == 413

    with pytest.raises(openai.BadRequestError) as empty:
        client.audio.speech.create(model="tts-1", voice="alloy", input="")
    assert empty.value.body["param"] == "input"

    with pytest.raises(openai.BadRequestError) as unknown_voice:
        client.audio.speech.create(model="tts-1", voice="darth", input="Hello")
    assert unknown_voice.value.body["param"] == "voice"
    assert "alloy" in unknown_voice.value.body["message"] and "joe" in unknown_voice.value.body["message"]

    with pytest.raises(openai.BadRequestError) as wrong_kind:
        client.audio.speech.create(model="whisper-1", voice="alloy", input="Hello")
    assert "piper-en-us-joe" in wrong_kind.value.body["message"]

    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(
            model="whisper-1",
            file=("a.wav", spoken[SENTENCES[0]]),
            response_format="json",
            timestamp_granularities=["word"],
        )

    assert (
        "report"
        in client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", spoken[SENTENCES[0]])
        ).text.lower()
    )


def test_bark_fixture_speaks_with_seed_presets_and_is_labelled(client: openai.OpenAI) -> None:
    card = next(m for m in client.models.list() if m.id == "bark-tiny-random")
    assert card.fixture is True
    for voice in ("v2/en_speaker_6", "alloy"):
        audio = client.audio.speech.create(
            model="bark-tiny-random", voice=voice, input="Hello there.", response_format="wav"
        ).content
        assert decode_seconds(audio) > 0
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="bark-tiny-random", voice="v2/xx_speaker_99", input="Hello")
    assert "v2/en_speaker_6" in caught.value.body["message"]


def reencode(wav: bytes, container: str, codec: str) -> bytes:
    """The wav's audio in another container and codec, as a phone or browser would upload it."""
    with av.open(io.BytesIO(wav)) as source:
        frames = list(source.decode(audio=0))
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as target:
        rate = 48_000 if codec == "libopus" else 24_000
        stream = target.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        for frame in frames:
            for resampled in resampler.resample(frame):
                for packet in stream.encode(resampled):
                    target.mux(packet)
        for packet in stream.encode(None):
            target.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize(
    ("filename", "container", "codec"),
    [
        ("a.flac", "flac", "flac"),
        ("a.mp3", "mp3", "libmp3lame"),
        ("a.ogg", "ogg", "libopus"),
        ("a.m4a", "ipod", "aac"),
        ("a.mp4", "mp4", "aac"),
        ("a.webm", "webm", "libopus"),
    ],
)
def test_uploads_in_every_container_openai_accepts(
    client: openai.OpenAI, all_sentences_wav: bytes, filename: str, container: str, codec: str
) -> None:
    data = reencode(all_sentences_wav, container, codec)
    text = client.audio.transcriptions.create(model="whisper-1", file=(filename, data)).text
    assert word_error_rate(" ".join(SENTENCES), text) <= 0.1, (filename, text)


def test_seed_initial_prompt_field_is_accepted(mesh: Mesh, spoken: dict) -> None:
    response = httpx.post(
        f"{mesh.base_url}/audio/transcriptions",
        files={"file": ("a.wav", spoken[SENTENCES[1]], "audio/wav")},
        data={"model": "whisper-1", "initial_prompt": "A coffee order.", "response_format": "text"},
        timeout=120,
    )
    assert response.status_code == 200
    assert word_error_rate(SENTENCES[1], response.text) <= 0.2
