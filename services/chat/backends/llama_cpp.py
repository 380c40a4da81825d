"""LlamaCppBackend: GGUF models through llama-cpp-python.

Generation drives `Llama.generate` token by token instead of create_completion, because the service needs
what create_completion hides or gets wrong: log probabilities without `logits_all` (which keeps logits for
every position of the context), logit_bias together with a logits processor (0.3.x drops both when given
both), exact token counts, and seeds per choice.
"""

import codecs
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from multai.registry import ModelManifest
from multai.streamed_text import partial_marker_length
from services.chat.backends.base import (
    Finished,
    FinishReason,
    FunctionTool,
    GenerationEvent,
    GenerationParams,
    InvalidParameterError,
    Message,
    TextDelta,
    TokenLogprob,
    TopLogprob,
    UnsupportedSchemaError,
)
from services.chat.backends.chat_template import CHATML_TEMPLATE, ChatTemplate

# llama-cpp-python's defaults for each endpoint, kept so that replies do not change with the engine loop.
CHAT_TEMPERATURE = 0.2
COMPLETION_TEMPERATURE = 0.8
COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions.
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05
# OpenAI reports this for tokens that are practically impossible; JSON has no -infinity.
LOWEST_LOGPROB = -9999.0
# llama.cpp reads this seed as "pick a random one", so request seeds are folded below it.
LLAMA_RANDOM_SEED = 0xFFFFFFFF


class _SamplingStep:
    """The logits processor of one generation: it adds logit_bias and keeps the step's log-probabilities.

    llama.cpp runs it first in the sampler chain, once per sampled token, on the raw logits in token id
    order, before penalties, grammar and temperature.
    """

    def __init__(self, logit_bias: dict[int, float], keep_logprobs: bool) -> None:
        self._ids = np.array(list(logit_bias), dtype=np.intc)
        # -100 is a ban (as OpenAI documents it), not merely a strong dislike.
        self._bias = np.array([-np.inf if v <= -100 else v for v in logit_bias.values()], dtype=np.single)
        self._keep_logprobs = keep_logprobs
        self.logprobs: npt.NDArray[np.float64] | None = None

    def __call__(self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> Any:
        if self._ids.size:
            scores[self._ids] += self._bias
        if self._keep_logprobs:
            logits = scores.astype(np.float64)
            finite_max = logits.max()
            self.logprobs = logits - (finite_max + np.log(np.exp(logits - finite_max).sum()))
        return scores


class _StopText:
    """Decodes token bytes into text and holds back what may still become a stop sequence."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""

    def push(self, data: bytes) -> tuple[str, bool]:
        """The text that is now certain, and whether a stop sequence ended the reply (it is not included)."""
        self._held += self._decoder.decode(data)
        found = [index for index in (self._held.find(s) for s in self._stops) if index >= 0]
        if found:
            text, self._held = self._held[: min(found)], ""
            return text, True
        keep = max((partial_marker_length(self._held, s) for s in self._stops), default=0)
        text, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep :]
        return text, False

    def flush(self) -> str:
        """What is held back, at the end of the reply (an unfinished character becomes U+FFFD)."""
        text, self._held = self._held + self._decoder.decode(b"", final=True), ""
        return text


class LlamaCppBackend:
    """One GGUF model; load() and every generation call block, so the caller runs them in a worker thread."""

    def __init__(self, manifest: ModelManifest, default_threads: int, default_context_length: int) -> None:
        self._manifest = manifest
        self._default_threads = default_threads
        self._context_length = int(manifest.defaults.get("context_length", default_context_length))
        self._model_stops = [str(s) for s in _as_list(manifest.defaults.get("stop", []))]
        self._llm: llama_cpp.Llama | None = None
        self._template: ChatTemplate | None = None

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        llm = llama_cpp.Llama(
            model_path=str(self._manifest.file_path()),
            n_ctx=self._context_length,
            n_threads=self._default_threads,
            n_gpu_layers=gpu_layers if use_gpu else 0,
            verbose=False,
        )
        # A manifest template replaces the GGUF's own (base models have none worth using).
        template = self._manifest.defaults.get("chat_template") or llm.metadata.get("tokenizer.chat_template")
        self._template = ChatTemplate(
            template if isinstance(template, str) else CHATML_TEMPLATE,
            bos_token=llm.detokenize([llm.token_bos()], special=True).decode(errors="ignore"),
            eos_token=llm.detokenize([llm.token_eos()], special=True).decode(errors="ignore"),
        )
        self._llm = llm
        return self._manifest.size_bytes + llm.n_ctx() * _kv_bytes_per_token(llm)

    def unload(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None
            self._template = None

    def stream_chat(
        self,
        messages: list[Message],
        tools: list[FunctionTool],
        params: GenerationParams,
        cancel: threading.Event,
    ) -> Iterator[GenerationEvent]:
        llm = self._require_loaded()
        assert self._template is not None
        prompt = self._template.render(messages, tools)
        # The template writes the special tokens (BOS included) itself.
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        yield from self._generate(
            tokens,
            params,
            stops=[*self._template.stop, *self._model_stops, *params.stop],
            default_temperature=CHAT_TEMPERATURE,
            max_tokens=params.max_tokens,
            prompt_param="messages",
            cancel=cancel,
        )

    def stream_completion(
        self, prompt: str, params: GenerationParams, cancel: threading.Event
    ) -> Iterator[GenerationEvent]:
        llm = self._require_loaded()
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True) or [llm.token_bos()]
        yield from self._generate(
            tokens,
            params,
            stops=[*self._model_stops, *params.stop],
            default_temperature=COMPLETION_TEMPERATURE,
            max_tokens=params.max_tokens if params.max_tokens is not None else COMPLETION_MAX_TOKENS,
            prompt_param="prompt",
            cancel=cancel,
        )

    def _generate(
        self,
        prompt_tokens: list[int],
        params: GenerationParams,
        stops: list[str],
        default_temperature: float,
        max_tokens: int | None,
        prompt_param: str,
        cancel: threading.Event,
    ) -> Iterator[GenerationEvent]:
        llm = self._require_loaded()
        room = llm.n_ctx() - len(prompt_tokens)
        if room <= 0:
            raise InvalidParameterError(
                f"the prompt is {len(prompt_tokens)} tokens long, and '{self._manifest.id}' holds "
                f"{llm.n_ctx()} tokens in all; shorten it",
                param=prompt_param,
            )
        limit = room if max_tokens is None else min(max_tokens, room)
        step = _SamplingStep(self._checked_bias(params.logit_bias), params.logprobs)
        # llama-cpp-python copies the logits out for a processor at every token; skip it when it has no work.
        processors = llama_cpp.LogitsProcessorList([step]) if params.logit_bias or params.logprobs else None
        grammar = _json_grammar(params)
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        text = _StopText(stops)
        reason = FinishReason.LENGTH
        stopped = False
        completion_tokens = 0
        # Log probabilities travel with the text of their tokens, which a stop sequence may hold back.
        pending: list[TokenLogprob] = []
        llm.set_seed(_engine_seed(params.seed))
        if params.seed is not None:
            # Reusing cached prompt tokens evaluates the rest in another batch shape, which moves the logits
            # slightly; a seeded reply must not depend on what the previous request left in the cache.
            llm.reset()
        with self._threads(params.n_threads):
            tokens = llm.generate(
                prompt_tokens,
                temp=params.temperature if params.temperature is not None else default_temperature,
                top_p=params.top_p if params.top_p is not None else DEFAULT_TOP_P,
                top_k=params.top_k if params.top_k is not None else DEFAULT_TOP_K,
                min_p=DEFAULT_MIN_P,
                repeat_penalty=params.repeat_penalty if params.repeat_penalty is not None else 1.0,
                frequency_penalty=params.frequency_penalty or 0.0,
                presence_penalty=params.presence_penalty or 0.0,
                logits_processor=processors,
                grammar=grammar,
            )
            try:
                for token in tokens:
                    if cancel.is_set() or llama_cpp.llama_vocab_is_eog(vocab, token):
                        reason = FinishReason.STOP
                        break
                    completion_tokens += 1
                    if step.logprobs is not None:
                        pending.append(self._token_logprob(token, step.logprobs, params.top_logprobs))
                    piece, stopped = text.push(llm.detokenize([token]))
                    if piece:
                        yield TextDelta(piece, tuple(pending))
                        pending = []
                    if stopped:
                        reason = FinishReason.STOP
                        break
                    if completion_tokens >= limit:
                        break
            finally:
                tokens.close()
        # After a stop sequence nothing more belongs to the reply.
        rest = "" if stopped else text.flush()
        if rest or pending:
            yield TextDelta(rest, tuple(pending))
        yield Finished(reason, len(prompt_tokens), completion_tokens)

    def _checked_bias(self, logit_bias: dict[int, float]) -> dict[int, float]:
        vocabulary = self._require_loaded().n_vocab()
        outside = [token for token in logit_bias if not 0 <= token < vocabulary]
        if outside:
            raise InvalidParameterError(
                f"logit_bias names token {outside[0]}, but '{self._manifest.id}' has token ids 0 to "
                f"{vocabulary - 1}",
                param="logit_bias",
            )
        return logit_bias

    def _token_logprob(self, token: int, logprobs: npt.NDArray[np.float64], top: int) -> TokenLogprob:
        alternatives: tuple[TopLogprob, ...] = ()
        if top:
            likeliest = np.argpartition(-logprobs, top)[:top]
            likeliest = likeliest[np.argsort(-logprobs[likeliest], kind="stable")]
            alternatives = tuple(TopLogprob(*self._token_entry(int(i), logprobs)) for i in likeliest)
        return TokenLogprob(*self._token_entry(token, logprobs), top_logprobs=alternatives)

    def _token_entry(self, token: int, logprobs: npt.NDArray[np.float64]) -> tuple[str, float, bytes]:
        data = self._require_loaded().detokenize([token], special=True)
        # A token may hold part of a character; OpenAI writes those bytes escaped.
        text = data.decode("utf-8", errors="backslashreplace")
        return text, max(float(logprobs[token]), LOWEST_LOGPROB), data

    @contextmanager
    def _threads(self, n_threads: int | None) -> Iterator[None]:
        """Runs with this many CPU threads, then goes back to the service's default."""
        llm = self._require_loaded()
        if n_threads is None:
            yield
            return
        llama_cpp.llama_set_n_threads(llm.ctx, n_threads, n_threads)
        try:
            yield
        finally:
            llama_cpp.llama_set_n_threads(llm.ctx, self._default_threads, self._default_threads)

    def _require_loaded(self) -> llama_cpp.Llama:
        if self._llm is None:
            raise RuntimeError(f"model {self._manifest.id} is not loaded")
        return self._llm


def _engine_seed(seed: int | None) -> int:
    """The request's seed as llama.cpp takes it; no seed draws a fresh one, so replies differ."""
    return random.randrange(LLAMA_RANDOM_SEED) if seed is None else seed % LLAMA_RANDOM_SEED


def _json_grammar(params: GenerationParams) -> LlamaGrammar | None:
    """A GBNF grammar that only admits JSON (matching the schema when one is given)."""
    if not params.json_only:
        return None
    try:
        if params.json_schema:
            return LlamaGrammar.from_json_schema(params.json_schema, verbose=False)
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    except Exception as exc:  # llama.cpp's converter raises plain Exceptions and ValueErrors alike.
        raise UnsupportedSchemaError(f"the JSON schema cannot be enforced: {exc}") from exc


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else [value]


def _kv_bytes_per_token(llm: llama_cpp.Llama) -> int:
    """An f16 KV cache holds keys and values of n_embd per layer for each token of the context."""
    n_layer = int(llm.metadata.get(f"{llm.metadata.get('general.architecture', '')}.block_count", 0) or 0)
    return 2 * 2 * n_layer * llm.n_embd()
