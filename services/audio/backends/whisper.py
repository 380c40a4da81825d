"""WhisperBackend: speech-to-text through faster-whisper (CTranslate2; int8 on the CPU, float16 on a GPU)."""

import numpy as np
import numpy.typing as npt
from faster_whisper import WhisperModel

from multai.registry import ModelManifest
from services.audio.backends.base import SegmentResult, TranscribeOptions, TranscriptResult, WordTiming

# Whisper's languages, code:name, as OpenAI's verbose_json names them.
_LANGUAGES = (
    "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese pt:portuguese "
    "tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian id:indonesian hi:hindi "
    "fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek ms:malay cs:czech ro:romanian da:danish "
    "hu:hungarian ta:tamil no:norwegian th:thai ur:urdu hr:croatian bg:bulgarian lt:lithuanian la:latin "
    "mi:maori ml:malayalam cy:welsh sk:slovak te:telugu fa:persian lv:latvian bn:bengali sr:serbian "
    "az:azerbaijani sl:slovenian kn:kannada et:estonian mk:macedonian br:breton eu:basque is:icelandic "
    "hy:armenian ne:nepali mn:mongolian bs:bosnian kk:kazakh sq:albanian sw:swahili gl:galician "
    "mr:marathi pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba so:somali af:afrikaans oc:occitan "
    "ka:georgian be:belarusian tg:tajik sd:sindhi gu:gujarati am:amharic yi:yiddish lo:lao uz:uzbek "
    "fo:faroese ht:haitian_creole ps:pashto tk:turkmen nn:nynorsk mt:maltese sa:sanskrit "
    "lb:luxembourgish my:myanmar bo:tibetan tl:tagalog mg:malagasy as:assamese tt:tatar haw:hawaiian "
    "ln:lingala ha:hausa ba:bashkir jw:javanese su:sundanese yue:cantonese"
)
LANGUAGE_NAMES = dict(pair.split(":") for pair in _LANGUAGES.split())
# Whisper's own fallback schedule, used when the caller sets no temperature.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class WhisperBackend:
    """One Whisper model folder in CTranslate2 format (model.bin, config.json, tokenizer.json)."""

    def __init__(self, manifest: ModelManifest, cpu_threads: int, vad_filter: bool) -> None:
        self._manifest = manifest
        self._cpu_threads = cpu_threads
        self._vad_filter = vad_filter
        self.multilingual = bool(manifest.defaults.get("multilingual", True))
        self._model: WhisperModel | None = None

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        self._model = WhisperModel(
            str(self._manifest.folder),
            device="cuda" if use_gpu else "cpu",
            compute_type="float16" if use_gpu else "int8",
            cpu_threads=self._cpu_threads,
            local_files_only=True,
        )
        return self._manifest.size_bytes

    def unload(self) -> None:
        self._model = None

    def transcribe(self, audio: npt.NDArray[np.float32], options: TranscribeOptions) -> TranscriptResult:
        if self._model is None:
            raise RuntimeError(f"model {self._manifest.id} is not loaded")
        temperature = FALLBACK_TEMPERATURES if options.temperature is None else options.temperature
        # Long audio is decoded window by window; the VAD filter skips silence between them.
        segments_iter, info = self._model.transcribe(
            audio,
            task=options.task,
            language=options.language or ("en" if not self.multilingual else None),
            initial_prompt=options.prompt or None,
            temperature=temperature,
            word_timestamps=options.word_timestamps,
            vad_filter=self._vad_filter,
        )
        segments: list[SegmentResult] = []
        words: list[WordTiming] = []
        for s in segments_iter:
            segments.append(
                SegmentResult(
                    id=s.id - 1 if s.id else len(segments),
                    seek=s.seek,
                    start=s.start,
                    end=s.end,
                    text=s.text,
                    tokens=list(s.tokens),
                    temperature=float(s.temperature or 0.0),
                    avg_logprob=s.avg_logprob,
                    compression_ratio=s.compression_ratio,
                    no_speech_prob=s.no_speech_prob,
                )
            )
            words.extend(WordTiming(w.word, w.start, w.end) for w in s.words or [])
        spoken = LANGUAGE_NAMES.get(info.language, info.language)
        language = "english" if options.task == "translate" else spoken
        return TranscriptResult(
            text="".join(s.text for s in segments).strip(),
            language=language,
            duration=info.duration,
            segments=segments,
            words=words,
        )
