"""BatchEngine: continuous batching over one llama.cpp context, driven from one dedicated thread.

A loaded GGUF model has N slots, one llama.cpp sequence each. Requests join between decode steps: every
step feeds one token of each running sequence, and a chunk of the prompts being prefilled, to one
`llama_decode`, so four streams cost little more than one. Chunks are small while others are decoding, so
a long prompt never stalls the streams already running for long. A slot keeps the KV cells of its last
prompt and reply; a new request starts from the longest prefix any slot holds (a multi-turn conversation's
history, or the long prompt of sibling choices), as llama.cpp's server does. Each sequence has a stream of
KV cells of its own, so its attention never spans the others' cells: faster for unrelated requests, and a
fresh sequence lands on the same cells every time, which keeps seeded replies reproducible.

LoRA adapters are loaded onto the model on this thread too, and llama.cpp applies one adapter set to a whole
decode step. So sequences are grouped by the adapter set they run with (none, for the base model): each step
decodes one group, and the groups take turns of `TURN_STEPS` steps. KV cells hold what the model computed
under one adapter set, so a prefix is only reused from a slot whose cells were made with the same set.

llama.cpp is called from this one thread only: with libgomp each calling thread gets an OpenMP team of its
own, and a pool of callers slowed decoding 2.7x after a few thousand requests.
"""

import asyncio
import contextlib
import ctypes
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np
import numpy.typing as npt

from multai.streamed_text import ByteDetokenizer, ReplyText
from services.chat.backends.base import (
    Finished,
    FinishReason,
    GenerationEvent,
    TextDelta,
    TokenLogprob,
    TopLogprob,
    UnsupportedSchemaError,
)

log = logging.getLogger(__name__)

# OpenAI reports this for tokens that are practically impossible; JSON has no -infinity.
LOWEST_LOGPROB = -9999.0
# Prompt tokens one step feeds while other sequences are decoding: bounds their stall to a few tokens' time.
PREFILL_CHUNK_WHILE_DECODING = 64
# A slot copies another slot's cells only to share at least this many more prompt tokens. The copy moves a
# whole cell stream at the next step: ~8 ms for SmolLM2's 2,048 cells here, where evaluating a prompt token
# costs ~2 ms; this threshold keeps copying a gain up to ~8,192-token slots.
COPY_PREFIX_MIN_TOKENS = 16
# A request waits for a sibling's prefill when it would share this many more tokens of it: long enough
# that evaluating them twice costs more than the wait (the sibling's prompt may be much longer).
WAIT_FOR_PREFIX_MIN_TOKENS = 64
# The penalties look back this far, as llama-cpp-python's default last_n_tokens_size.
PENALTY_LAST_N = 64
PIECE_BUFFER_BYTES = 256
# Steps a group of sequences with one adapter set decodes before the next group's turn. Each switch makes
# llama.cpp reserve its compute graph again (~4 ms for SmolLM2 here): in bench/lora_bench.py 2 base + 2
# adapter streams made 56 % of 4 base streams' tokens/s switching every step, 67 % in turns of 8 and 69 %
# in turns of 16, while a waiting group's stall grows with the turn (8 steps: ~120 ms).
TURN_STEPS = 8

# The LoRA adapters a sequence runs with, by model id, with their scales; () is the base model alone.
AdapterSet = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class SamplingSpec:
    """One sequence's sampler chain; temperature 0 is greedy."""

    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repeat_penalty: float
    frequency_penalty: float
    presence_penalty: float
    seed: int
    # A GBNF grammar the reply must match (root rule "root"), or None.
    grammar: str | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    # None: no log probabilities; otherwise report each token's with this many alternatives.
    top_logprobs: int | None = None


@dataclass
class SequenceJob:
    """What one sequence generates: a prompt, its sampler, its limits."""

    prompt: list[int]
    sampling: SamplingSpec
    max_tokens: int
    stops: list[str]
    # False: evaluate the whole prompt afresh, so that a seeded reply does not depend on the cache.
    reuse_prefix: bool = True
    n_threads: int | None = None
    adapters: AdapterSet = ()


class _Left:
    """The engine's last word to a stream: the sequence has left the batch and its slot is free."""


_LEFT = _Left()
Delivered = GenerationEvent | BaseException | _Left


class EngineStream:
    """One sequence's events on the event loop that opened it; closing it takes the sequence out of the batch.

    `next_events` returns everything that arrived since the last call, so a reader that lags sends several
    tokens at once while the first token is never held back.
    """

    def __init__(self, engine: "BatchEngine", job: SequenceJob) -> None:
        self._engine = engine
        self.job = job
        self.loop = asyncio.get_running_loop()
        self._items: deque[Delivered] = deque()
        self._arrived = asyncio.Event()
        self._left = asyncio.Event()
        self._finished = False
        self.cancelled = False

    def _deliver(self, items: list[Delivered]) -> None:
        """On the loop: takes the engine's items."""
        for item in items:
            if item is _LEFT:
                self._left.set()
            else:
                self._items.append(item)
        self._arrived.set()

    async def next_events(self) -> list[GenerationEvent]:
        """The events that arrived, waiting for at least one; [] once the sequence has finished."""
        while not self._items:
            if self._finished or self._left.is_set():
                return []
            self._arrived.clear()
            await self._arrived.wait()
        events: list[GenerationEvent] = []
        while self._items:
            item = self._items.popleft()
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            assert not isinstance(item, _Left)
            events.append(item)
            if isinstance(item, Finished):
                self._finished = True
        return events

    async def aclose(self) -> None:
        """Takes the sequence out of the batch (if it still runs) and waits until the engine has let it go.

        It waits even if cancelled meanwhile, then re-raises: the lease must outlive the sequence.
        """
        if not self._left.is_set():
            self.cancelled = True
            self._engine.wake()
        cancelled: asyncio.CancelledError | None = None
        while not self._left.is_set():
            try:
                await asyncio.shield(self._left.wait())
            except asyncio.CancelledError as exc:
                cancelled = exc
        if cancelled is not None:
            raise cancelled


@dataclass
class _Running:
    """A sequence in a slot: its prompt still to feed, or the token it sampled last."""

    stream: EngineStream
    sampler: "llama_cpp.llama_sampler_p"
    text: ReplyText
    limit: int
    fed: int = 0
    next_token: int | None = None
    generated: int = 0
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class _Slot:
    """One llama.cpp sequence id and the tokens whose KV cells it holds."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    # The adapter set the cells of `tokens` were computed with.
    adapters: AdapterSet = ()
    running: _Running | None = None
    last_used: float = 0.0

    def shared(self, job: SequenceJob) -> int:
        """How many leading prompt tokens of the job this slot's cells hold."""
        return _common_prefix(self.tokens, job.prompt) if self.adapters == job.adapters else 0


class BatchEngine:
    """Owns a llama.cpp context with `slots` sequences and decodes all of them together on its own thread."""

    def __init__(
        self,
        model: llama_cpp.llama_model_p,
        ctx: llama_cpp.llama_context_p,
        slots: int,
        n_batch: int,
        default_threads: int,
        name: str,
    ) -> None:
        self._model = model
        self._ctx = ctx
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._n_batch = n_batch
        self._default_threads = default_threads
        self._threads = default_threads
        self._slots = [_Slot(i) for i in range(slots)]
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._piece = ctypes.create_string_buffer(PIECE_BUFFER_BYTES)
        self._waiting: deque[EngineStream] = deque()
        self._inbox: deque[EngineStream] = deque()
        # Work for the engine thread between steps (loading and freeing adapters), with its result.
        self._commands: deque[tuple[Callable[[], None], Future[None]]] = deque()
        self._adapters: dict[str, llama_cpp.llama_adapter_lora_p] = {}
        # The set applied to the context now, and the steps its group has had in its turn.
        self._applied: AdapterSet = ()
        self._turn_steps = 0
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-batch", daemon=True)
        self._thread.start()

    def cells_in_use(self) -> int:
        """KV cells held by running sequences (a metric: read from any thread, exact only on the engine's)."""
        return sum(len(slot.tokens) for slot in self._slots if slot.running is not None)

    def open(self, job: SequenceJob) -> EngineStream:
        """Queues a sequence; its events arrive on the calling event loop."""
        stream = EngineStream(self, job)
        with self._wakeup:
            self._inbox.append(stream)
            self._wakeup.notify()
        return stream

    def wake(self) -> None:
        """Makes the engine look at its sequences now (one was cancelled)."""
        with self._wakeup:
            self._wakeup.notify()

    def load_adapter(self, name: str, path: Path) -> None:
        """Loads a GGUF LoRA adapter onto the model under `name`; blocks until the engine thread has."""

        def load() -> None:
            if name in self._adapters:
                return
            adapter = llama_cpp.llama_adapter_lora_init(self._model, str(path).encode())
            if not adapter:
                raise ValueError(f"llama.cpp cannot load {path} as a LoRA adapter of this model")
            self._adapters[name] = adapter

        self._command(load)

    def unload_adapter(self, name: str) -> None:
        """Frees an adapter no running sequence uses; blocks until the engine thread has."""

        def unload() -> None:
            adapter = self._adapters.pop(name, None)
            if adapter is None:
                return
            if any(applied == name for applied, _ in self._applied):
                # The context must not keep a pointer to a freed adapter.
                llama_cpp.llama_set_adapters_lora(self._ctx, None, 0, None)
                self._applied = ()
            llama_cpp.llama_adapter_lora_free(adapter)

        self._command(unload)

    def close(self) -> None:
        """Stops the thread (after failing whatever is still queued), frees the adapters and the batch."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        self._thread.join()
        if self._adapters:
            llama_cpp.llama_set_adapters_lora(self._ctx, None, 0, None)
        for adapter in self._adapters.values():
            llama_cpp.llama_adapter_lora_free(adapter)
        self._adapters.clear()
        llama_cpp.llama_batch_free(self._batch)

    def _command(self, work: Callable[[], None]) -> None:
        done: Future[None] = Future()
        with self._wakeup:
            if self._stopping:
                raise RuntimeError("the model was unloaded")
            self._commands.append((work, done))
            self._wakeup.notify()
        done.result()

    # The engine thread

    def _run(self) -> None:
        outbox: dict[EngineStream, list[Delivered]] = {}
        while True:
            with self._wakeup:
                while not (
                    self._stopping or self._inbox or self._commands or self._waiting or self._has_running()
                ):
                    self._wakeup.wait()
                if self._stopping:
                    break
                self._waiting.extend(self._inbox)
                self._inbox.clear()
                commands = list(self._commands)
                self._commands.clear()
            for work, done in commands:
                try:
                    work()
                except Exception as exc:  # The caller gets the failure; the engine goes on.
                    done.set_exception(exc)
                else:
                    done.set_result(None)
            try:
                self._step(outbox)
            except Exception as exc:  # A broken step fails the sequences in it, never the thread.
                log.exception("batch step failed")
                for slot in self._slots:
                    if slot.running is not None:
                        self._leave(slot, outbox, exc)
            self._flush(outbox)
        error = RuntimeError("the model was unloaded")
        for _, done in self._commands:
            done.set_exception(error)
        self._commands.clear()
        for stream in [*self._inbox, *self._waiting]:
            outbox[stream] = [error, _LEFT]
        for slot in self._slots:
            if slot.running is not None:
                self._leave(slot, outbox, error)
        self._flush(outbox)

    def _has_running(self) -> bool:
        return any(slot.running is not None for slot in self._slots)

    def _step(self, outbox: dict[EngineStream, list[Delivered]]) -> None:
        for stream in [s for s in self._waiting if s.cancelled]:
            self._waiting.remove(stream)
            outbox[stream] = [_LEFT]
        for slot in self._slots:
            if slot.running is not None and slot.running.stream.cancelled:
                self._leave(slot, outbox)
        self._admit(outbox)
        if not self._has_running():
            return
        group = self._next_group()
        feeding = self._fill_batch(group)
        self._set_threads()
        status = llama_cpp.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        for slot, index in feeding:
            self._sample(slot, index, outbox)

    def _admit(self, outbox: dict[EngineStream, list[Delivered]]) -> None:
        """Moves waiting sequences into free slots, each starting from the longest prefix some slot holds."""
        for stream in list(self._waiting):
            free = [slot for slot in self._slots if slot.running is None]
            if not free:
                return
            job = stream.job
            if job.reuse_prefix and self._sibling_prefilling(job):
                continue  # it will share that prefix once it is evaluated, instead of evaluating it twice
            self._waiting.remove(stream)
            missing = [name for name, _ in job.adapters if name not in self._adapters]
            if missing:
                outbox[stream] = [RuntimeError(f"adapter {missing[0]} is not loaded"), _LEFT]
                continue
            try:
                sampler = self._sampler(job.sampling)
            except UnsupportedSchemaError as exc:
                outbox[stream] = [exc, _LEFT]
                continue
            slot = self._place(job, free)
            text = ReplyText(ByteDetokenizer(self._reply_piece), job.stops)
            slot.running = _Running(stream, sampler, text, job.max_tokens)
            slot.running.fed = len(slot.tokens)

    def _sibling_prefilling(self, job: SequenceJob) -> bool:
        """Whether a running sequence is evaluating a longer prefix of this prompt than any slot holds."""
        held = max((slot.shared(job) for slot in self._slots), default=0)
        for slot in self._slots:
            running = slot.running
            if running is not None and running.next_token is None and slot.adapters == job.adapters:
                pending = _common_prefix(running.stream.job.prompt, job.prompt)
                if pending - held >= WAIT_FOR_PREFIX_MIN_TOKENS:
                    return True
        return False

    def _place(self, job: SequenceJob, free: list[_Slot]) -> _Slot:
        """Picks a free slot and gives it the longest reusable prefix of the prompt; the rest is fed later.

        A slot's own cells are cut to the shared prefix for free. Another slot's are copied only when they
        hold much more of the prompt: sequences live in separate cell streams, and a copy moves a whole one.
        """
        # At least the last prompt token is always evaluated: its logits give the first reply token.
        usable = len(job.prompt) - 1 if job.reuse_prefix else 0

        def shared(slot: _Slot) -> int:
            return min(slot.shared(job), usable)

        # The free slot that holds most of the prompt; else the least recently used one loses its cache.
        target = max(free, key=lambda s: (shared(s), -s.last_used))
        length = shared(target)
        donor = max((s for s in self._slots if s is not target), key=shared, default=None)
        if donor is not None and shared(donor) >= length + COPY_PREFIX_MIN_TOKENS:
            length = shared(donor)
            llama_cpp.llama_memory_seq_rm(self._memory, target.seq_id, -1, -1)
            llama_cpp.llama_memory_seq_cp(self._memory, donor.seq_id, target.seq_id, -1, -1)
        if not llama_cpp.llama_memory_seq_rm(self._memory, target.seq_id, length, -1):
            length = 0  # this cache cannot be cut here; start over
            llama_cpp.llama_memory_seq_rm(self._memory, target.seq_id, -1, -1)
        target.tokens = job.prompt[:length]
        target.adapters = job.adapters
        target.last_used = time.monotonic()
        return target

    def _next_group(self) -> AdapterSet:
        """The adapter set whose sequences decode this step, applied to the context.

        The group in its turn keeps it for TURN_STEPS steps while others wait, then the next group (in a
        fixed order) takes over; a lone group keeps the context for as long as it runs.
        """
        groups = sorted({slot.adapters for slot in self._slots if slot.running is not None})
        group = self._applied
        if group not in groups or (self._turn_steps >= TURN_STEPS and len(groups) > 1):
            later = [g for g in groups if g > group]
            group = later[0] if later else groups[0]
            self._turn_steps = 0
        self._turn_steps += 1
        if group != self._applied:
            self._apply_adapters(group)
        return group

    def _apply_adapters(self, group: AdapterSet) -> None:
        # llama-cpp-python types the handles as c_void_p; they are the POINTERs its restype says.
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * len(group))(
            *(self._adapters[name] for name, _ in group)  # type: ignore[misc]
        )
        scales = (ctypes.c_float * len(group))(*(scale for _, scale in group))
        status = llama_cpp.llama_set_adapters_lora(self._ctx, handles, len(group), scales)
        if status != 0:
            raise RuntimeError(f"llama_set_adapters_lora returned {status}")
        self._applied = group

    def _fill_batch(self, group: AdapterSet) -> list[tuple[_Slot, int]]:
        """Fills the batch with one group's sequences: decoding sequences' last tokens, then prompt chunks;
        returns who gets logits."""
        batch = self._batch
        count = 0
        feeding: list[tuple[_Slot, int]] = []

        def add(slot: _Slot, token: int, logits: bool) -> None:
            nonlocal count
            batch.token[count] = token
            batch.pos[count] = len(slot.tokens)
            batch.n_seq_id[count] = 1
            batch.seq_id[count][0] = slot.seq_id
            batch.logits[count] = logits
            slot.tokens.append(token)
            if logits:
                feeding.append((slot, count))
            count += 1

        prefilling = []
        for slot in self._slots:
            running = slot.running
            if running is None or slot.adapters != group:
                continue
            if running.next_token is not None:
                add(slot, running.next_token, True)
                running.next_token = None
            else:
                prefilling.append(slot)
        budget = self._n_batch - count
        if count:
            budget = min(budget, PREFILL_CHUNK_WHILE_DECODING)
        for slot in prefilling:
            running = slot.running
            assert running is not None
            prompt = running.stream.job.prompt
            chunk = prompt[running.fed : running.fed + max(budget, 0)]
            for offset, token in enumerate(chunk):
                add(slot, token, running.fed + offset == len(prompt) - 1)
            running.fed += len(chunk)
            budget -= len(chunk)
            if budget <= 0:
                break
        batch.n_tokens = count
        return feeding

    def _set_threads(self) -> None:
        """A request's n_threads holds for the steps it is in; the largest wins when several ask."""
        asked = [
            s.running.stream.job.n_threads
            for s in self._slots
            if s.running is not None and s.running.stream.job.n_threads
        ]
        threads = max(asked) if asked else self._default_threads
        if threads != self._threads:
            llama_cpp.llama_set_n_threads(self._ctx, threads, threads)
            self._threads = threads

    def _sample(self, slot: _Slot, index: int, outbox: dict[EngineStream, list[Delivered]]) -> None:
        running = slot.running
        assert running is not None
        job = running.stream.job
        events = outbox.setdefault(running.stream, [])
        logprobs = None
        if job.sampling.top_logprobs is not None:
            logprobs = self._logprobs(index, job.sampling.logit_bias)
        token = llama_cpp.llama_sampler_sample(running.sampler, self._ctx, index)
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, FinishReason.STOP, stopped=False, outbox=outbox)
            return
        running.generated += 1
        if logprobs is not None:
            running.pending_logprobs.append(
                self._token_logprob(token, logprobs, job.sampling.top_logprobs or 0)
            )
        piece, stopped = running.text.push(token)
        if piece:
            events.append(TextDelta(piece, tuple(running.pending_logprobs)))
            running.pending_logprobs = []
        if stopped:
            self._finish(slot, FinishReason.STOP, stopped=True, outbox=outbox)
        elif running.generated >= running.limit:
            self._finish(slot, FinishReason.LENGTH, stopped=False, outbox=outbox)
        else:
            running.next_token = token

    def _finish(
        self, slot: _Slot, reason: FinishReason, stopped: bool, outbox: dict[EngineStream, list[Delivered]]
    ) -> None:
        running = slot.running
        assert running is not None
        events = outbox.setdefault(running.stream, [])
        # After a stop sequence nothing more belongs to the reply.
        rest = "" if stopped else running.text.finish()
        if rest or running.pending_logprobs:
            events.append(TextDelta(rest, tuple(running.pending_logprobs)))
        events.append(Finished(reason, len(running.stream.job.prompt), running.generated))
        self._leave(slot, outbox)

    def _leave(
        self, slot: _Slot, outbox: dict[EngineStream, list[Delivered]], error: BaseException | None = None
    ) -> None:
        """Frees the slot (its KV cells stay, for the next request that shares the prefix)."""
        running = slot.running
        assert running is not None
        llama_cpp.llama_sampler_free(running.sampler)
        slot.running = None
        slot.last_used = time.monotonic()
        events = outbox.setdefault(running.stream, [])
        if error is not None:
            # The cells of a failed step may be half-written.
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            slot.tokens = []
            events.append(error)
        events.append(_LEFT)

    def _flush(self, outbox: dict[EngineStream, list[Delivered]]) -> None:
        """Hands each loop its streams' items in one call: one wake-up per step, not one per token."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[EngineStream, list[Delivered]]]] = {}
        for stream, items in outbox.items():
            if items:
                by_loop.setdefault(stream.loop, []).append((stream, items))
        outbox.clear()
        for loop, deliveries in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(_deliver_all, deliveries)

    # Sampling

    def _sampler(self, spec: SamplingSpec) -> "llama_cpp.llama_sampler_p":
        """The chain llama-cpp-python builds: logit bias, penalties, grammar, then greedy or top-k/p, min-p,
        temperature and a seeded draw."""
        chain: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        add = llama_cpp.llama_sampler_chain_add
        if spec.grammar is not None:
            grammar = llama_cpp.llama_sampler_init_grammar(self._vocab, spec.grammar.encode(), b"root")
            if not grammar:
                llama_cpp.llama_sampler_free(chain)
                raise UnsupportedSchemaError("the JSON schema cannot be enforced: its grammar does not parse")
        if spec.logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(spec.logit_bias))(
                *(
                    llama_cpp.llama_logit_bias(token, _bias_value(bias))
                    for token, bias in spec.logit_bias.items()
                )
            )
            add(chain, llama_cpp.llama_sampler_init_logit_bias(self._n_vocab, len(spec.logit_bias), biases))
        add(
            chain,
            llama_cpp.llama_sampler_init_penalties(
                self._n_vocab,
                PENALTY_LAST_N,
                spec.repeat_penalty,
                spec.frequency_penalty,
                spec.presence_penalty,
            ),
        )
        if spec.grammar is not None:
            add(chain, grammar)
        if spec.temperature == 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            add(chain, llama_cpp.llama_sampler_init_top_k(spec.top_k))
            add(chain, llama_cpp.llama_sampler_init_top_p(spec.top_p, 1))
            add(chain, llama_cpp.llama_sampler_init_min_p(spec.min_p, 1))
            add(chain, llama_cpp.llama_sampler_init_temp(spec.temperature))
            add(chain, llama_cpp.llama_sampler_init_dist(spec.seed))
        return chain

    def _logprobs(self, index: int, logit_bias: dict[int, float]) -> npt.NDArray[np.float64]:
        """Log-probabilities of the next token at a batch position, after logit_bias."""
        pointer = llama_cpp.llama_get_logits_ith(self._ctx, index)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,)).astype(np.float64)
        for token, bias in logit_bias.items():
            logits[token] += _bias_value(bias)
        finite_max = logits.max()
        result: npt.NDArray[np.float64] = logits - (finite_max + np.log(np.exp(logits - finite_max).sum()))
        return result

    def _token_logprob(self, token: int, logprobs: npt.NDArray[np.float64], top: int) -> TokenLogprob:
        alternatives: tuple[TopLogprob, ...] = ()
        if top:
            likeliest = np.argpartition(-logprobs, top)[:top]
            likeliest = likeliest[np.argsort(-logprobs[likeliest], kind="stable")]
            alternatives = tuple(TopLogprob(*self._token_entry(int(i), logprobs)) for i in likeliest)
        return TokenLogprob(*self._token_entry(token, logprobs), top_logprobs=alternatives)

    def _token_entry(self, token: int, logprobs: npt.NDArray[np.float64]) -> tuple[str, float, bytes]:
        data = self._piece_of(token, special=True)
        # A token may hold part of a character; OpenAI writes those bytes escaped.
        text = data.decode("utf-8", errors="backslashreplace")
        return text, max(float(logprobs[token]), LOWEST_LOGPROB), data

    def _reply_piece(self, token: int) -> bytes:
        return self._piece_of(token, special=False)

    def _piece_of(self, token: int, special: bool) -> bytes:
        length = llama_cpp.llama_token_to_piece(
            self._vocab, token, self._piece, PIECE_BUFFER_BYTES, 0, special
        )
        return self._piece.raw[: max(length, 0)]


def _deliver_all(deliveries: list[tuple[EngineStream, list[Delivered]]]) -> None:
    for stream, items in deliveries:
        stream._deliver(items)


def _bias_value(bias: float) -> float:
    # -100 is a ban (as OpenAI documents it), not merely a strong dislike.
    return -math.inf if bias <= -100 else bias


def _common_prefix(a: list[int], b: list[int]) -> int:
    length = min(len(a), len(b))
    index = 0
    while index < length and a[index] == b[index]:
        index += 1
    return index
