"""LlamaCppBackend: GGUF models through llama-cpp-python, served by a continuous-batching engine.

The backend turns a request into a token sequence and a sampler (`SequenceJob`) and hands it to the model's
`BatchEngine`, which decodes it together with the other requests in flight (`llama_batch.py`). A LoRA adapter
is a `LlamaLoraBackend` over its base model's backend: loading it loads the adapter onto the base's weights,
and its requests run in the base's batch with the adapter applied.
"""

import asyncio
import random
from dataclasses import replace

import llama_cpp
from llama_cpp import _internals, _logger
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from multai.registry import ModelManifest
from services.chat.backends.base import (
    FunctionTool,
    GenerationParams,
    InvalidParameterError,
    Message,
    UnsupportedSchemaError,
)
from services.chat.backends.chat_template import CHATML_TEMPLATE, ChatTemplate
from services.chat.backends.llama_batch import (
    AdapterSet,
    BatchEngine,
    EngineStream,
    SamplingSpec,
    SequenceJob,
)

# llama-cpp-python's defaults for each endpoint, kept so that replies do not change with the engine.
CHAT_TEMPERATURE = 0.2
COMPLETION_TEMPERATURE = 0.8
COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions.
MAX_CHARACTERS_PER_TOKEN = 32
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05
# llama.cpp reads this seed as "pick a random one", so request seeds are folded below it.
LLAMA_RANDOM_SEED = 0xFFFFFFFF
# Tokens one llama_decode takes at most (a step's decode tokens plus prompt chunks).
BATCH_TOKENS = 512
# A string character in llama-cpp-python's schema grammars, and the same rule without control characters.
SCHEMA_CHAR_RULE = r'char ::= [^"\\] |'
JSON_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] |'


class LlamaCppBackend:
    """One GGUF model with `slots` sequences decoded together; load() and unload() block."""

    def __init__(
        self, manifest: ModelManifest, default_threads: int, default_context_length: int, default_slots: int
    ) -> None:
        self._manifest = manifest
        self._default_threads = default_threads
        # The context of one request; each slot has KV cells for this many tokens.
        self.context_length = manifest.int_default("context_length", default_context_length)
        self.slots = manifest.parallel or default_slots
        self._model_stops = [str(s) for s in _as_list(manifest.defaults.get("stop", []))]
        self._model: _internals.LlamaModel | None = None
        self._context: _internals.LlamaContext | None = None
        self._engine: BatchEngine | None = None
        self._template: ChatTemplate | None = None

    def estimated_bytes(self) -> int:
        """The file plus the KV cells of every slot, read from the GGUF's metadata (its vocabulary only)."""
        _logger.set_verbose(False)
        model_params = llama_cpp.llama_model_default_params()
        model_params.vocab_only = True
        model = _internals.LlamaModel(
            path_model=str(self._manifest.file_path()), params=model_params, verbose=False
        )
        try:
            return self._footprint_bytes(model.metadata())
        finally:
            model.close()

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        _logger.set_verbose(False)  # llama.cpp writes its load report to stderr otherwise
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = gpu_layers if use_gpu else 0
        model = _internals.LlamaModel(
            path_model=str(self._manifest.file_path()), params=model_params, verbose=False
        )
        context_params = llama_cpp.llama_context_default_params()
        context_params.n_ctx = self.context_length * self.slots
        context_params.n_batch = context_params.n_ubatch = BATCH_TOKENS
        context_params.n_seq_max = self.slots
        context_params.n_threads = context_params.n_threads_batch = self._default_threads
        # A stream of context_length cells per sequence (see llama_batch.py); full-size sliding-window
        # caches, so that a kept prefix can be reused past the window.
        context_params.kv_unified = False
        context_params.swa_full = True
        context_params.no_perf = True
        try:
            context = _internals.LlamaContext(model=model, params=context_params, verbose=False)
        except BaseException:
            model.close()
            raise
        metadata = model.metadata()
        # A manifest template replaces the GGUF's own (base models have none worth using).
        template = self._manifest.defaults.get("chat_template") or metadata.get("tokenizer.chat_template")
        self._template = ChatTemplate(
            template if isinstance(template, str) else CHATML_TEMPLATE,
            bos_token=model.detokenize([model.token_bos()], special=True).decode(errors="ignore"),
            eos_token=model.detokenize([model.token_eos()], special=True).decode(errors="ignore"),
        )
        self._model, self._context = model, context
        self._engine = BatchEngine(
            model.model, context.ctx, self.slots, BATCH_TOKENS, self._default_threads, self._manifest.id
        )
        return self._footprint_bytes(metadata)

    def kv_cache_usage(self) -> float:
        """The share of the context's KV cells that running requests hold (0 when not loaded)."""
        engine = self._engine
        return 0.0 if engine is None else engine.cells_in_use() / (self.context_length * self.slots)

    def unload(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        if self._context is not None:
            self._context.close()
            self._context = None
        if self._model is not None:
            self._model.close()
            self._model = None
        self._template = None

    def adapter_backend(self, manifest: ModelManifest) -> "LlamaLoraBackend":
        """The backend of a LoRA adapter of this model."""
        return LlamaLoraBackend(manifest, self)

    def load_adapter(self, manifest: ModelManifest) -> int:
        """Loads an adapter onto the loaded model; returns the bytes it takes (about its file's size)."""
        self._require_engine().load_adapter(manifest.id, manifest.file_path())
        return manifest.size_bytes

    def unload_adapter(self, manifest: ModelManifest) -> None:
        """Frees an adapter; nothing may be generating with it. Unloading the model frees its adapters too."""
        if self._engine is not None:
            self._engine.unload_adapter(manifest.id)

    async def open_chat(
        self,
        messages: list[Message],
        tools: list[FunctionTool],
        params: GenerationParams,
        adapters: AdapterSet = (),
    ) -> EngineStream:
        """Starts generating the assistant's reply, `tools` described to the model, with these adapters."""
        characters = sum(len(m.content) + sum(len(c.arguments) for c in m.tool_calls) for m in messages)
        self._check_request_size(characters, params.max_tokens, "messages")
        job = await asyncio.to_thread(self._chat_job, messages, tools, params)
        return self._require_engine().open(replace(job, adapters=adapters))

    async def open_completion(
        self, prompt: str, params: GenerationParams, adapters: AdapterSet = ()
    ) -> EngineStream:
        """Starts continuing a raw prompt, with these adapters."""
        self._check_request_size(len(prompt), params.max_tokens, "prompt")
        job = await asyncio.to_thread(self._completion_job, prompt, params)
        return self._require_engine().open(replace(job, adapters=adapters))

    def _check_request_size(self, characters: int, max_tokens: int | None, prompt_param: str) -> None:
        """Refuses, before any tokenising, a prompt or max_tokens that cannot fit the context."""
        if max_tokens is not None and max_tokens >= self.context_length:
            raise InvalidParameterError(
                f"max_tokens is {max_tokens}, and '{self._manifest.id}' holds {self.context_length} tokens "
                "in all, prompt included; lower max_tokens",
                param="max_tokens",
            )
        # Text averages 3-5 characters a token, and long runs of spaces or symbols are rarely more than
        # MAX_CHARACTERS_PER_TOKEN; the bound keeps a huge prompt from holding a thread for seconds of
        # tokenising only to be refused.
        if characters > self.context_length * MAX_CHARACTERS_PER_TOKEN:
            raise InvalidParameterError(
                f"the prompt is {characters} characters long, more than '{self._manifest.id}''s "
                f"{self.context_length} tokens can hold; shorten it",
                param=prompt_param,
            )

    def _chat_job(
        self, messages: list[Message], tools: list[FunctionTool], params: GenerationParams
    ) -> SequenceJob:
        model = self._require_model()
        assert self._template is not None
        prompt = self._template.render(messages, tools)
        # The template writes the special tokens (BOS included) itself.
        tokens = model.tokenize(prompt.encode(), add_bos=False, special=True)
        return self._job(
            tokens,
            params,
            stops=[*self._template.stop, *self._model_stops, *params.stop],
            default_temperature=CHAT_TEMPERATURE,
            max_tokens=params.max_tokens,
            prompt_param="messages",
        )

    def _completion_job(self, prompt: str, params: GenerationParams) -> SequenceJob:
        model = self._require_model()
        tokens = model.tokenize(prompt.encode(), add_bos=True, special=True) or [model.token_bos()]
        return self._job(
            tokens,
            params,
            stops=[*self._model_stops, *params.stop],
            default_temperature=COMPLETION_TEMPERATURE,
            max_tokens=params.max_tokens if params.max_tokens is not None else COMPLETION_MAX_TOKENS,
            prompt_param="prompt",
        )

    def _job(
        self,
        prompt_tokens: list[int],
        params: GenerationParams,
        stops: list[str],
        default_temperature: float,
        max_tokens: int | None,
        prompt_param: str,
    ) -> SequenceJob:
        room = self.context_length - len(prompt_tokens)
        if room <= 0:
            raise InvalidParameterError(
                f"the prompt is {len(prompt_tokens)} tokens long, and '{self._manifest.id}' holds "
                f"{self.context_length} tokens in all; shorten it",
                param=prompt_param,
            )
        # As OpenAI's: a reply that could not reach max_tokens is refused rather than cut short silently.
        if max_tokens is not None and max_tokens > room:
            raise InvalidParameterError(
                f"'{self._manifest.id}' holds {self.context_length} tokens; this request asks for "
                f"{len(prompt_tokens) + max_tokens} ({len(prompt_tokens)} in the prompt, {max_tokens} in the "
                "reply); shorten the prompt or lower max_tokens",
                param="max_tokens",
            )
        sampling = SamplingSpec(
            temperature=params.temperature if params.temperature is not None else default_temperature,
            top_k=params.top_k if params.top_k is not None else DEFAULT_TOP_K,
            top_p=params.top_p if params.top_p is not None else DEFAULT_TOP_P,
            min_p=DEFAULT_MIN_P,
            repeat_penalty=params.repeat_penalty if params.repeat_penalty is not None else 1.0,
            frequency_penalty=params.frequency_penalty or 0.0,
            presence_penalty=params.presence_penalty or 0.0,
            seed=_engine_seed(params.seed),
            grammar=_json_grammar(params),
            logit_bias=self._checked_bias(params.logit_bias),
            top_logprobs=params.top_logprobs if params.logprobs else None,
        )
        return SequenceJob(
            prompt=prompt_tokens,
            sampling=sampling,
            max_tokens=room if max_tokens is None else max_tokens,
            stops=stops,
            # Reused cells were evaluated in another batch shape, which moves the logits slightly; a seeded
            # reply must not depend on what an earlier request left in the cache.
            reuse_prefix=params.seed is None,
            n_threads=params.n_threads,
        )

    def _footprint_bytes(self, metadata: dict[str, str]) -> int:
        return self._manifest.size_bytes + self.context_length * self.slots * _kv_bytes_per_token(metadata)

    def _checked_bias(self, logit_bias: dict[int, float]) -> dict[int, float]:
        vocabulary = self._require_model().n_vocab()
        outside = [token for token in logit_bias if not 0 <= token < vocabulary]
        if outside:
            raise InvalidParameterError(
                f"logit_bias names token {outside[0]}, but '{self._manifest.id}' has token ids 0 to "
                f"{vocabulary - 1}",
                param="logit_bias",
            )
        return logit_bias

    def _require_model(self) -> _internals.LlamaModel:
        if self._model is None:
            raise RuntimeError(f"model {self._manifest.id} is not loaded")
        return self._model

    def _require_engine(self) -> BatchEngine:
        if self._engine is None:
            raise RuntimeError(f"model {self._manifest.id} is not loaded")
        return self._engine


class LlamaLoraBackend:
    """A GGUF LoRA adapter applied to its base model (`LlamaCppBackend`) at the manifest's scale.

    The host loads the base first (an adapter's lease holds the base too), so load() only adds the adapter.
    """

    def __init__(self, manifest: ModelManifest, base: LlamaCppBackend) -> None:
        self._manifest = manifest
        self._base = base
        self._adapters: AdapterSet = ((manifest.id, manifest.scale),)

    @property
    def slots(self) -> int:
        """The base's slots: adapter requests decode in its batch."""
        return self._base.slots

    def estimated_bytes(self) -> int:
        """The adapter's tensors, about its file's size."""
        return self._manifest.size_bytes

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        return self._base.load_adapter(self._manifest)

    def unload(self) -> None:
        self._base.unload_adapter(self._manifest)

    async def open_chat(
        self, messages: list[Message], tools: list[FunctionTool], params: GenerationParams
    ) -> EngineStream:
        """Starts generating the assistant's reply on the base model with this adapter."""
        return await self._base.open_chat(messages, tools, params, self._adapters)

    async def open_completion(self, prompt: str, params: GenerationParams) -> EngineStream:
        """Starts continuing a raw prompt on the base model with this adapter."""
        return await self._base.open_completion(prompt, params, self._adapters)


def _engine_seed(seed: int | None) -> int:
    """The request's seed as llama.cpp takes it; no seed draws a fresh one, so replies differ."""
    return random.randrange(LLAMA_RANDOM_SEED) if seed is None else seed % LLAMA_RANDOM_SEED


def _json_grammar(params: GenerationParams) -> str | None:
    """A GBNF grammar that only admits JSON (matching the schema when one is given)."""
    if not params.json_only:
        return None
    if not params.json_schema:
        return JSON_GBNF
    try:
        grammar: str = json_schema_to_gbnf(params.json_schema)
    except Exception as exc:  # llama.cpp's converter raises plain Exceptions and ValueErrors alike.
        raise UnsupportedSchemaError(f"the JSON schema cannot be enforced: {exc}") from exc
    # llama-cpp-python's converter lets raw control characters into strings, which JSON forbids (llama.cpp's
    # own converter excludes them); a model that writes a newline in a string then replies invalid JSON.
    return grammar.replace(SCHEMA_CHAR_RULE, JSON_CHAR_RULE)


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else [value]


def _kv_bytes_per_token(metadata: dict[str, str]) -> int:
    """An f16 KV cache holds a key and a value of n_embd x n_head_kv / n_head numbers per layer and token."""
    architecture = metadata.get("general.architecture", "")

    def number(key: str) -> int:
        return int(metadata.get(f"{architecture}.{key}", 0) or 0)

    n_head = number("attention.head_count") or 1
    key_width = number("attention.key_length") or number("embedding_length") // n_head
    value_width = number("attention.value_length") or key_width
    n_head_kv = number("attention.head_count_kv") or n_head
    return 2 * number("block_count") * n_head_kv * (key_width + value_width)
