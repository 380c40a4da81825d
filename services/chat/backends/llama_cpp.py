"""LlamaCppBackend: GGUF models through llama-cpp-python."""

import threading
from collections.abc import Iterator
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from multai.registry import ModelManifest
from services.chat.backends.base import (
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationParams,
    Message,
    TextDelta,
    UnsupportedSchemaError,
)


class _TokenCounter:
    """A logits processor that counts sampling steps, because llama-cpp-python's streams carry no usage.

    It runs once per sampled token; on its first call the context holds exactly the prompt tokens.
    """

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.steps = 0

    def __call__(self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> Any:
        if self.steps == 0:
            self.prompt_tokens = len(input_ids)
        self.steps += 1
        return scores


class LlamaCppBackend:
    """One GGUF model; load() and every generation call block, so the caller runs them in a worker thread."""

    def __init__(self, manifest: ModelManifest, default_threads: int, default_context_length: int) -> None:
        self._manifest = manifest
        self._default_threads = default_threads
        self._context_length = int(manifest.defaults.get("context_length", default_context_length))
        self._model_stops = [str(s) for s in _as_list(manifest.defaults.get("stop", []))]
        self._llm: llama_cpp.Llama | None = None

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        template = self._manifest.defaults.get("chat_template")
        llm = llama_cpp.Llama(
            model_path=str(self._manifest.file_path()),
            n_ctx=self._context_length,
            n_threads=self._default_threads,
            n_gpu_layers=gpu_layers if use_gpu else 0,
            verbose=False,
        )
        if isinstance(template, str):
            # A manifest template replaces the GGUF's own (base models have none worth using).
            formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=llm.detokenize([llm.token_eos()], special=True).decode(errors="ignore"),
                bos_token=llm.detokenize([llm.token_bos()], special=True).decode(errors="ignore"),
            )
            llm.chat_handler = formatter.to_chat_handler()
        self._llm = llm
        return self._manifest.size_bytes + llm.n_ctx() * _kv_bytes_per_token(llm)

    def unload(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def stream_chat(
        self, messages: list[Message], params: GenerationParams, cancel: threading.Event
    ) -> Iterator[GenerationEvent]:
        llm = self._require_loaded()
        counter = _TokenCounter()
        chunks = llm.create_chat_completion(
            messages=[_message_dict(m) for m in messages],
            stream=True,
            logits_processor=llama_cpp.LogitsProcessorList([counter]),
            grammar=_json_grammar(params),
            **self._sampling_kwargs(params),
        )
        yield from self._relay(chunks, counter, cancel, params, lambda c: c["delta"].get("content") or "")

    def stream_completion(
        self, prompt: str, params: GenerationParams, cancel: threading.Event
    ) -> Iterator[GenerationEvent]:
        llm = self._require_loaded()
        counter = _TokenCounter()
        kwargs = self._sampling_kwargs(params)
        # OpenAI's completions default to 16 tokens.
        kwargs["max_tokens"] = params.max_tokens if params.max_tokens is not None else 16
        chunks = llm.create_completion(
            prompt=prompt,
            stream=True,
            logits_processor=llama_cpp.LogitsProcessorList([counter]),
            **kwargs,
        )
        yield from self._relay(chunks, counter, cancel, params, lambda c: c.get("text") or "")

    def _relay(
        self,
        chunks: Any,
        counter: _TokenCounter,
        cancel: threading.Event,
        params: GenerationParams,
        text_of: Any,
    ) -> Iterator[GenerationEvent]:
        llm = self._require_loaded()
        if params.n_threads is not None:
            llama_cpp.llama_set_n_threads(llm.ctx, params.n_threads, params.n_threads)
        reason = FinishReason.STOP
        try:
            for chunk in chunks:
                if cancel.is_set():
                    break
                choice = chunk["choices"][0]
                text = text_of(choice)
                if text:
                    yield TextDelta(text)
                if choice.get("finish_reason") == "length":
                    reason = FinishReason.LENGTH
        finally:
            chunks.close()
            if params.n_threads is not None:
                llama_cpp.llama_set_n_threads(llm.ctx, self._default_threads, self._default_threads)
        # The end-of-turn token is sampled but not part of the completion, as OpenAI counts it.
        completion_tokens = counter.steps - (1 if reason is FinishReason.STOP and counter.steps else 0)
        yield Finished(reason, counter.prompt_tokens, completion_tokens)

    def _sampling_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"stop": [*self._model_stops, *params.stop] or None}
        optional = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "seed": params.seed,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
            "top_k": params.top_k,
            "repeat_penalty": params.repeat_penalty,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        return kwargs

    def _require_loaded(self) -> llama_cpp.Llama:
        if self._llm is None:
            raise RuntimeError(f"model {self._manifest.id} is not loaded")
        return self._llm


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


def _message_dict(message: Message) -> dict[str, str]:
    result = {"role": message.role, "content": message.content}
    if message.name:
        result["name"] = message.name
    return result


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else [value]


def _kv_bytes_per_token(llm: llama_cpp.Llama) -> int:
    """An f16 KV cache holds keys and values of n_embd per layer for each token of the context."""
    n_layer = int(llm.metadata.get(f"{llm.metadata.get('general.architecture', '')}.block_count", 0) or 0)
    return 2 * 2 * n_layer * llm.n_embd()
