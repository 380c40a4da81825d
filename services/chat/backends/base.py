"""The interface every chat engine implements, and the plain data it exchanges."""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol


class FinishReason(Enum):
    """Why generation ended."""

    STOP = "stop"
    LENGTH = "length"


@dataclass(frozen=True)
class ToolCall:
    """A function call an assistant turn made."""

    id: str
    name: str
    # The arguments as JSON object text, as OpenAI's API carries them.
    arguments: str


@dataclass(frozen=True)
class FunctionTool:
    """A function the model may call."""

    name: str
    description: str = ""
    # A JSON Schema of the arguments object; None means no parameters.
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True)
class Message:
    """One turn of a conversation."""

    role: str
    content: str
    name: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    # For a "tool" turn: the id of the call whose result this is.
    tool_call_id: str = ""


@dataclass(frozen=True)
class GenerationParams:
    """Sampling controls; None takes the engine's default."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    n_threads: int | None = None
    # Added to the logits of these token ids; -100 bans a token, +100 all but forces it.
    logit_bias: dict[int, float] = field(default_factory=dict)
    # Report each generated token's log probability, with this many likeliest alternatives.
    logprobs: bool = False
    top_logprobs: int = 0
    # Constrain the reply to JSON: any object, or one that validates against this schema (JSON text).
    json_only: bool = False
    json_schema: str | None = None


class UnsupportedSchemaError(ValueError):
    """The engine cannot turn this JSON Schema into a grammar."""


class InvalidParameterError(ValueError):
    """A request parameter the engine cannot honour, such as a token id outside the vocabulary."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class TopLogprob:
    """One of the likeliest tokens at a position."""

    token: str
    logprob: float
    token_bytes: bytes


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log probability and the likeliest alternatives, likeliest first."""

    token: str
    logprob: float
    token_bytes: bytes
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    """A piece of generated text, with the log probabilities of the tokens behind it when asked for."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Finished:
    """The end of a generation, with its token counts."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


GenerationEvent = TextDelta | Finished


class GenerationStream(Protocol):
    """One generation in flight; its events arrive on the event loop that opened it."""

    async def next_events(self) -> list[GenerationEvent]:
        """Every event that arrived since the last call, waiting for one; [] after the Finished event."""

    async def aclose(self) -> None:
        """Ends the generation if it still runs, and returns once the engine no longer works on it."""


class ChatBackend(Protocol):
    """A loaded-on-demand text generation engine that serves `slots` requests at once.

    load() and unload() block and run off the event loop; the open_* calls run on it and return at once.
    """

    slots: int

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        """Loads the weights; returns the bytes the model takes, the KV cells of every slot included."""

    def unload(self) -> None:
        """Frees the model's memory; nothing may be generating."""

    async def open_chat(
        self, messages: list[Message], tools: list[FunctionTool], params: GenerationParams
    ) -> GenerationStream:
        """Starts generating the assistant's reply, `tools` described to the model."""

    async def open_completion(self, prompt: str, params: GenerationParams) -> GenerationStream:
        """Starts continuing a raw prompt."""
