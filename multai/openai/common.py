"""Pydantic models shared by several endpoints."""

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from multai.chat.v1 import chat_pb2
from multai.openai_params import ENGINE_BOUNDS, INT32_MAX, SAMPLING_BOUNDS

# Token ids travel as protobuf int32; whether the model has the id is the chat service's check.
TokenId = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]


def validation_failure(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """A request model's validation errors as OpenAI's message and the first offending parameter's path
    (e.g. messages.0.content), for the REST bridge's 400 and the client library's BadRequestError alike."""
    first = errors[0] if errors else {}
    # pydantic's location also names the union member it tried (literal['auto',...], NamedToolChoice) and
    # dict keys ([key]); OpenAI's param is the field path alone.
    location = [str(part) for part in first.get("loc", ()) if part != "body" and _is_field_name(part)]
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid request"))
    return (f"Invalid value for '{param}': {message}" if param else message), param


# How pydantic names the plain-type members of a union in an error's location.
_UNION_MEMBER_TYPES = {"str", "int", "float", "bool", "bytes", "list", "dict"}


def _is_field_name(part: object) -> bool:
    if isinstance(part, int):
        return True
    text = str(part)
    return text.isidentifier() and not text[0].isupper() and text not in _UNION_MEMBER_TYPES


def _is_none(value: object) -> bool:
    return value is None


def omitted_if_none(description: str | None = None) -> Any:
    """A response field that OpenAI leaves out, rather than sends as null, when it has no value."""
    return Field(None, exclude_if=_is_none, description=description)


class OpenAIModel(BaseModel):
    """Base of request models: unknown fields are ignored, as vLLM and LocalAI do."""

    model_config = ConfigDict(extra="ignore")


class Prioritized(OpenAIModel):
    """A request that waits in the scheduler's queue; X-MultAI-Priority overrides the field."""

    priority: int | None = Field(
        None, ge=0, le=2, description="Queue level: 0 urgent, 1 normal, 2 background."
    )


class Usage(BaseModel):
    """Token counts of one request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class StreamOptions(OpenAIModel):
    """Options of a streamed response."""

    include_usage: bool = Field(False, description="Send a last chunk with the usage of the whole request.")


class SamplingFields(Prioritized):
    """Sampling parameters common to chat and completions, with the seed design's llama.cpp extras."""

    frequency_penalty: Annotated[float, SAMPLING_BOUNDS["frequency_penalty"].interval()] | None = None
    max_tokens: Annotated[int, SAMPLING_BOUNDS["max_tokens"].interval()] | None = Field(
        None, description="The most tokens to generate."
    )
    n: int = Field(1, ge=1, le=1, description="Choices to generate; only 1 is supported for now.")
    presence_penalty: Annotated[float, SAMPLING_BOUNDS["presence_penalty"].interval()] | None = None
    seed: Annotated[int, SAMPLING_BOUNDS["seed"].interval()] | None = Field(
        None, description="Same seed and parameters give the same output."
    )
    stop: str | list[str] | None = Field(None, description="Up to 4 sequences that end generation.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, SAMPLING_BOUNDS["temperature"].interval()] | None = None
    top_p: Annotated[float, SAMPLING_BOUNDS["top_p"].interval()] | None = None
    user: str | None = None
    top_k: Annotated[int, SAMPLING_BOUNDS["top_k"].interval()] | None = Field(
        None, description="llama.cpp: sample among the k most likely tokens."
    )
    repeat_penalty: Annotated[float, SAMPLING_BOUNDS["repeat_penalty"].interval()] | None = Field(
        None, description="llama.cpp: multiplicative repetition penalty."
    )
    n_threads: Annotated[int, ENGINE_BOUNDS["n_threads"].interval()] | None = Field(
        None, description="llama.cpp: CPU threads for this request."
    )
    n_gpu_layers: Annotated[int, ENGINE_BOUNDS["n_gpu_layers"].interval()] | None = Field(
        None, description="llama.cpp: layers to offload when on the GPU."
    )

    def stop_list(self) -> list[str]:
        """`stop` as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def sampling_to_pb(self, max_tokens: int | None) -> chat_pb2.SamplingParams:
        """The sampling fields as protobuf; unset stays unset so the engine applies its defaults."""
        return chat_pb2.SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=max_tokens,
            stop=self.stop_list(),
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            top_k=self.top_k,
            repeat_penalty=self.repeat_penalty,
        )

    def engine_to_pb(self) -> chat_pb2.EngineOptions:
        """The seed design's engine extras as protobuf."""
        return chat_pb2.EngineOptions(n_threads=self.n_threads, n_gpu_layers=self.n_gpu_layers)
