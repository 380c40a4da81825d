"""Pydantic models of /v1/responses (request, response object, stream events), in OpenAI's field order.

The bridge is stateless: nothing is stored, so fields that refer to earlier responses are declared only to
be refused by name (see serving/responses.py).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from multai.openai.common import OpenAIModel, Prioritized
from multai.openai_params import SAMPLING_BOUNDS

ItemStatus = Literal["in_progress", "completed", "incomplete"]


class InputTextPart(OpenAIModel):
    """Text the caller wrote."""

    type: Literal["input_text"]
    text: str


class OutputTextPart(OpenAIModel):
    """Text of an earlier assistant turn, as the previous response's output gives it back."""

    type: Literal["output_text"]
    text: str


class InputImagePart(OpenAIModel):
    """An image for a vision model: a data URL, or an http(s) URL of an allowed host."""

    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = Field(None, description="Not supported: the server has no Files API.")
    detail: Literal["auto", "low", "high"] = "auto"


InputContentPart = Annotated[InputTextPart | OutputTextPart | InputImagePart, Field(discriminator="type")]


def _text_or_list(value: Any) -> str:
    return "text" if isinstance(value, str) else "list"


# Tagged unions, so that a validation error names only the branch the caller meant (input.list.0...),
# not every member of the union.
MessageContent = Annotated[
    Annotated[str, Tag("text")] | Annotated[list[InputContentPart], Tag("list")], Discriminator(_text_or_list)
]


class MessageItem(OpenAIModel):
    """A message of the conversation; `type` may be left out, as in the SDK's EasyInputMessage."""

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: MessageContent
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallItem(OpenAIModel):
    """A function call of an earlier turn, sent back with its output for a tool round trip."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str = Field(description="The arguments as JSON object text.")
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallOutputItem(OpenAIModel):
    """The result of a function call, for the model to continue from."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: Annotated[
        Annotated[str, Tag("text")] | Annotated[list[InputTextPart], Tag("list")],
        Discriminator(_text_or_list),
    ] = Field(description="The result as text, or as text parts.")
    id: str | None = None
    status: ItemStatus | None = None

    def output_text(self) -> str:
        """The output as one string."""
        return self.output if isinstance(self.output, str) else "".join(part.text for part in self.output)


def _item_type(value: Any) -> str:
    # Messages may come without a type; every other item names its type.
    if isinstance(value, dict):
        return str(value.get("type", "message"))
    return str(getattr(value, "type", "message"))


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(
        _item_type,
        custom_error_type="invalid_input_item",
        custom_error_message="input items are messages, function_call or function_call_output items",
    ),
]


ResponseInput = Annotated[
    Annotated[str, Tag("text")] | Annotated[list[InputItem], Tag("list")], Discriminator(_text_or_list)
]


class TextFormatText(OpenAIModel):
    """Plain text."""

    type: Literal["text"]


class TextFormatJsonObject(OpenAIModel):
    """Any JSON object."""

    type: Literal["json_object"]


class TextFormatJsonSchema(OpenAIModel):
    """JSON that validates against a schema."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    json_schema: dict[str, Any] = Field(alias="schema", description="A JSON Schema object.")
    description: str | None = None
    strict: bool | None = Field(None, description="Always enforced: the reply is generated under a grammar.")


TextFormat = Annotated[
    TextFormatText | TextFormatJsonObject | TextFormatJsonSchema, Field(discriminator="type")
]


class TextConfig(OpenAIModel):
    """How the text output is shaped."""

    format: TextFormat = Field(default_factory=lambda: TextFormatText(type="text"))
    verbosity: Literal["low", "medium", "high"] | None = None


class FunctionToolParam(OpenAIModel):
    """A function the model may call."""

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="A JSON Schema object.")
    strict: bool | None = None


class UnsupportedToolParam(OpenAIModel):
    """A hosted tool type (web_search, file_search, ...): parsed only to be refused by its type."""

    type: str


def _tool_kind(value: Any) -> str:
    if isinstance(value, str):
        return "mode"
    tool_type = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "function" if tool_type == "function" else "unsupported"


ToolParam = Annotated[
    Annotated[FunctionToolParam, Tag("function")] | Annotated[UnsupportedToolParam, Tag("unsupported")],
    Discriminator(_tool_kind),
]


class FunctionToolChoice(OpenAIModel):
    """Forces a call of the named function."""

    type: Literal["function"]
    name: str = Field(min_length=1)


class UnsupportedToolChoice(OpenAIModel):
    """A tool_choice for hosted tools: parsed only to be refused by its type."""

    type: str


ToolChoiceParam = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("mode")]
    | Annotated[FunctionToolChoice, Tag("function")]
    | Annotated[UnsupportedToolChoice, Tag("unsupported")],
    Discriminator(_tool_kind),
]


class ResponsesRequest(Prioritized):
    """The request body."""

    model: str = Field(min_length=1)
    input: ResponseInput | None = Field(None, description="A user message, or the conversation as items.")
    instructions: str | None = Field(None, description="Sent as a leading system message.")
    max_output_tokens: Annotated[int, SAMPLING_BOUNDS["max_tokens"].interval()] | None = Field(
        None, description="The most tokens to generate."
    )
    temperature: Annotated[float, SAMPLING_BOUNDS["temperature"].interval()] | None = None
    top_p: Annotated[float, SAMPLING_BOUNDS["top_p"].interval()] | None = None
    stream: bool = False
    text: TextConfig | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = Field(None, description="Echoed back; nothing is stored.")
    user: str | None = None
    store: bool | None = Field(None, description="Accepted; the server is stateless and stores nothing.")
    # Declared so that they are refused by name instead of ignored: they need stored state or a job queue.
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    background: bool | None = None


class OutputText(BaseModel):
    """Generated text."""

    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class OutputMessage(BaseModel):
    """The assistant's message."""

    type: Literal["message"] = "message"
    id: str
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class OutputFunctionCall(BaseModel):
    """A function call for the caller to run and answer with a function_call_output item."""

    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


OutputItem = Annotated[OutputMessage | OutputFunctionCall, Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    """No prompt cache here, so nothing is cached."""

    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    """No reasoning models here."""

    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    """Token counts of the response."""

    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    """Why a response stopped early."""

    reason: Literal["max_output_tokens"]


class ResponseError(BaseModel):
    """Why a response failed."""

    code: str
    message: str


ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed"]


class ResponseObject(BaseModel):
    """A response, whole or as a snapshot in a lifecycle event; echoes the request's settings."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    completed_at: int | None = None
    background: bool = False
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: None = None
    store: bool = Field(False, description="Always false: nothing is stored.")
    temperature: float | None = None
    text: TextConfig
    tool_choice: Literal["none", "auto", "required"] | FunctionToolChoice = "auto"
    tools: list[FunctionToolParam] = Field(default_factory=list)
    top_p: float | None = None
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


LifecycleEventType = Literal[
    "response.created", "response.in_progress", "response.completed", "response.incomplete", "response.failed"
]
OutputItemEventType = Literal["response.output_item.added", "response.output_item.done"]
ContentPartEventType = Literal["response.content_part.added", "response.content_part.done"]


class ResponseLifecycleEvent(BaseModel):
    """response.created, in_progress, completed, incomplete or failed, with the response so far."""

    type: LifecycleEventType
    sequence_number: int
    response: ResponseObject


class OutputItemEvent(BaseModel):
    """An output item starts (added) or is finished (done)."""

    type: OutputItemEventType
    sequence_number: int
    output_index: int
    item: OutputItem


class ItemEvent(BaseModel):
    """An event about one output item, named by its id and its position in the output."""

    sequence_number: int
    item_id: str
    output_index: int


class ContentEvent(ItemEvent):
    """An event about one content part of a message."""

    content_index: int


class ContentPartEvent(ContentEvent):
    """A content part of a message starts (added) or is finished (done)."""

    type: ContentPartEventType
    part: OutputText


class OutputTextDeltaEvent(ContentEvent):
    """New text of a content part."""

    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class OutputTextDoneEvent(ContentEvent):
    """The whole text of a content part."""

    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class FunctionCallArgumentsDeltaEvent(ItemEvent):
    """New text of a function call's arguments."""

    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    delta: str


class FunctionCallArgumentsDoneEvent(ItemEvent):
    """The whole arguments of a function call."""

    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    arguments: str


class ErrorEvent(BaseModel):
    """An error in the middle of a stream; a response.failed event follows."""

    type: Literal["error"] = "error"
    sequence_number: int
    code: str | None
    message: str
    param: str | None


StreamEvent = (
    ResponseLifecycleEvent
    | OutputItemEvent
    | ContentPartEvent
    | OutputTextDeltaEvent
    | OutputTextDoneEvent
    | FunctionCallArgumentsDeltaEvent
    | FunctionCallArgumentsDoneEvent
    | ErrorEvent
)
