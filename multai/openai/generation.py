"""Generation streams (chat, completions, vision) from protobuf to OpenAI's objects, for the REST bridge and
the client library alike: the same messages become the same chunks and the same whole responses."""

from dataclasses import dataclass, field, replace
from typing import Any

from multai.chat.v1 import chat_pb2
from multai.openai.chat import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionMessage,
    ChatCompletionMessageToolCall,
    ChatCompletionTokenLogprob,
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
    ChoiceLogprobs,
    FunctionCall,
    TopLogprob,
)
from multai.openai.common import Usage
from multai.openai.completions import Completion, CompletionChoice
from multai.openai_params import finish_reason_name


class IncompleteStreamError(Exception):
    """The service ended a stream before every choice had finished."""


@dataclass(frozen=True)
class Piece:
    """One message of a generation stream, in plain Python."""

    model: str
    delta: str
    finish_reason: str | None
    usage: Usage | None
    # Set in a stream's first piece only.
    system_fingerprint: str = ""
    # Only chat completion messages carry these; other generations have one choice and plain text.
    choice_index: int = 0
    tool_calls: tuple[ChoiceDeltaToolCall, ...] = ()
    logprobs: tuple[ChatCompletionTokenLogprob, ...] = ()


def piece_from_pb(message: Any) -> Piece:
    """A CreateChatCompletion, CreateCompletion or CreateVisionCompletion message."""
    usage = None
    if message.HasField("usage"):
        u = message.usage
        usage = Usage(
            prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens, total_tokens=u.total_tokens
        )
    piece = Piece(
        message.model,
        message.delta,
        finish_reason_name(message.finish_reason),
        usage,
        message.system_fingerprint,
    )
    if not isinstance(message, chat_pb2.CreateChatCompletionResponse):
        return piece
    return replace(
        piece,
        choice_index=message.choice_index,
        tool_calls=tuple(_tool_call_delta(c) for c in message.tool_calls),
        logprobs=tuple(_token_logprob(t) for t in message.logprobs),
    )


def _tool_call_delta(delta: chat_pb2.ToolCallDelta) -> ChoiceDeltaToolCall:
    """A piece of a call as OpenAI streams it: id, type and name only in the first piece of each call."""
    return ChoiceDeltaToolCall(
        index=delta.index,
        id=delta.id or None,
        type="function" if delta.id else None,
        function=ChoiceDeltaToolCallFunction(name=delta.name or None, arguments=delta.arguments),
    )


def _token_logprob(logprob: chat_pb2.TokenLogprob) -> ChatCompletionTokenLogprob:
    return ChatCompletionTokenLogprob(
        token=logprob.token,
        logprob=logprob.logprob,
        bytes=list(logprob.bytes),
        top_logprobs=[
            TopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.bytes)) for t in logprob.top_logprobs
        ],
    )


@dataclass
class _Stream:
    """What every chunk of one response repeats."""

    completion_id: str
    created: int
    first: Piece

    def fields(self) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "created": self.created,
            "model": self.first.model,
            "system_fingerprint": self.first.system_fingerprint,
        }


class ChatChunker:
    """The chunks of a streamed chat completion: per choice a role chunk, content and tool-call chunks and a
    finish chunk, each with its choice index; then the usage chunk if asked for."""

    def __init__(self, completion_id: str, created: int, first: Piece, include_usage: bool) -> None:
        self._stream = _Stream(completion_id, created, first)
        self._include_usage = include_usage
        self._started: set[int] = set()

    def chunks(self, piece: Piece) -> list[ChatCompletionChunk]:
        """The chunks one piece becomes."""
        index = piece.choice_index
        chunks = []
        if index not in self._started:
            self._started.add(index)
            chunks.append(self._chunk(index, ChoiceDelta(role="assistant", content="")))
        if piece.delta or piece.tool_calls or piece.logprobs:
            delta = ChoiceDelta(content=piece.delta or None, tool_calls=list(piece.tool_calls) or None)
            logprobs = ChoiceLogprobs(content=list(piece.logprobs)) if piece.logprobs else None
            chunks.append(self._chunk(index, delta, logprobs=logprobs))
        if piece.finish_reason is not None:
            chunks.append(self._chunk(index, ChoiceDelta(), piece.finish_reason))
        if piece.usage is not None and self._include_usage:
            chunks.append(self._with_choices([], piece.usage))
        return chunks

    def _chunk(
        self,
        index: int,
        delta: ChoiceDelta,
        finish_reason: str | None = None,
        logprobs: ChoiceLogprobs | None = None,
    ) -> ChatCompletionChunk:
        choice = ChatCompletionChunkChoice(
            index=index, delta=delta, logprobs=logprobs, finish_reason=finish_reason
        )
        return self._with_choices([choice])

    def _with_choices(
        self, choices: list[ChatCompletionChunkChoice], usage: Usage | None = None
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(**self._stream.fields(), choices=choices, usage=usage)


@dataclass
class _CallParts:
    """One tool call, gathered from its streamed pieces."""

    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def add(self, delta: ChoiceDeltaToolCall) -> None:
        self.call_id = delta.id or self.call_id
        if delta.function is not None:
            self.name = delta.function.name or self.name
            self.arguments.append(delta.function.arguments or "")

    def tool_call(self) -> ChatCompletionMessageToolCall:
        return ChatCompletionMessageToolCall(
            id=self.call_id, function=FunctionCall(name=self.name, arguments="".join(self.arguments))
        )


@dataclass
class _ChoiceReply:
    """One choice of a whole response, gathered from its pieces; tool-call pieces merge by index."""

    content: list[str] = field(default_factory=list)
    calls: dict[int, _CallParts] = field(default_factory=dict)
    logprobs: list[ChatCompletionTokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, piece: Piece) -> None:
        self.content.append(piece.delta)
        for delta in piece.tool_calls:
            self.calls.setdefault(delta.index, _CallParts()).add(delta)
        self.logprobs.extend(piece.logprobs)
        if piece.finish_reason is not None:
            self.finish_reason = piece.finish_reason

    def choice(self, index: int) -> ChatCompletionChoice:
        """The choice as the whole response shows it; content is null when the reply is only calls."""
        if self.finish_reason is None:
            raise IncompleteStreamError(f"the service ended the stream before choice {index} finished")
        text = "".join(self.content)
        tool_calls = [self.calls[i].tool_call() for i in sorted(self.calls)]
        return ChatCompletionChoice(
            index=index,
            message=ChatCompletionMessage(
                content=None if tool_calls and not text else text, tool_calls=tool_calls or None
            ),
            logprobs=ChoiceLogprobs(content=self.logprobs) if self.logprobs else None,
            finish_reason=self.finish_reason,
        )


class ChatReplies:
    """A whole chat completion, gathered from the pieces of its stream."""

    def __init__(self) -> None:
        self._replies: dict[int, _ChoiceReply] = {}
        self._first: Piece | None = None
        self._usage: Usage | None = None

    def add(self, piece: Piece) -> None:
        self._first = self._first or piece
        self._replies.setdefault(piece.choice_index, _ChoiceReply()).add(piece)
        self._usage = piece.usage or self._usage

    def completion(self, completion_id: str, created: int) -> ChatCompletion:
        """The response; raises IncompleteStreamError unless every choice finished and usage arrived."""
        if self._first is None or self._usage is None:
            raise IncompleteStreamError("the service ended the stream without finishing the reply")
        return ChatCompletion(
            id=completion_id,
            created=created,
            model=self._first.model,
            choices=[self._replies[index].choice(index) for index in sorted(self._replies)],
            usage=self._usage,
            system_fingerprint=self._first.system_fingerprint,
        )


class CompletionChunker:
    """The chunks of a streamed text completion: text chunks, a finish chunk, then usage if asked for."""

    def __init__(self, completion_id: str, created: int, first: Piece, include_usage: bool) -> None:
        self._stream = _Stream(completion_id, created, first)
        self._include_usage = include_usage

    def text(self, text: str, finish_reason: str | None = None) -> Completion:
        """One chunk of text (the echoed prompt, or a piece of the continuation)."""
        return self._with_choices([CompletionChoice(text=text, finish_reason=finish_reason)])

    def chunks(self, piece: Piece) -> list[Completion]:
        """The chunks one piece becomes."""
        chunks = [self.text(piece.delta)] if piece.delta else []
        if piece.finish_reason is not None:
            chunks.append(self.text("", piece.finish_reason))
            if self._include_usage:
                chunks.append(self._with_choices([], piece.usage))
        return chunks

    def _with_choices(self, choices: list[CompletionChoice], usage: Usage | None = None) -> Completion:
        return Completion(**self._stream.fields(), choices=choices, usage=usage)


def whole_completion(completion_id: str, created: int, first: Piece, text: str, last: Piece) -> Completion:
    """A whole text completion: its text (after an echoed prompt, if asked) and the last piece's end."""
    if last.finish_reason is None:
        raise IncompleteStreamError("the service ended the stream without finishing the reply")
    return Completion(
        id=completion_id,
        created=created,
        model=first.model,
        choices=[CompletionChoice(text=text, finish_reason=last.finish_reason)],
        usage=last.usage,
        system_fingerprint=first.system_fingerprint,
    )
