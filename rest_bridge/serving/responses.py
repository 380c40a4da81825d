"""/v1/responses as a translation onto chat completions: a Responses request becomes a chat request served by
ChatServing, and the chat reply (whole or streamed) becomes a Response object or OpenAI's Responses events.

Stateless: nothing is stored, so a request must carry its whole conversation in `input`.
"""

import time
import uuid
from collections.abc import AsyncIterator

from multai.common.v1 import common_pb2
from multai.openai.chat import (
    ChatCompletion,
    ChatCompletionMessageToolCall,
    ChatCompletionRequest,
    ChatCompletionTool,
    ChatMessageParam,
    ChoiceDeltaToolCall,
    ContentPart,
    FunctionCall,
    FunctionDefinition,
    ImageContentPart,
    ImageUrl,
    JsonSchemaFormat,
    NamedFunction,
    NamedToolChoice,
    ResponseFormatParam,
    TextContentPart,
)
from multai.openai.common import Usage
from multai.openai.responses import (
    ContentPartEvent,
    ContentPartEventType,
    ErrorEvent,
    FunctionCallArgumentsDeltaEvent,
    FunctionCallArgumentsDoneEvent,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionToolChoice,
    FunctionToolParam,
    IncompleteDetails,
    InputImagePart,
    InputItem,
    ItemStatus,
    LifecycleEventType,
    MessageItem,
    OutputFunctionCall,
    OutputItem,
    OutputItemEvent,
    OutputItemEventType,
    OutputMessage,
    OutputText,
    OutputTextDeltaEvent,
    OutputTextDoneEvent,
    ResponseError,
    ResponseLifecycleEvent,
    ResponseObject,
    ResponsesRequest,
    ResponseStatus,
    ResponseUsage,
    StreamEvent,
    TextConfig,
    TextFormatJsonObject,
    TextFormatJsonSchema,
    UnsupportedToolChoice,
    UnsupportedToolParam,
)
from rest_bridge.errors import OpenAIError, invalid_request
from rest_bridge.serving.chat import ChatServing
from rest_bridge.serving.generation import GenerationStream

STATELESS = "this server is stateless and stores no responses; send the whole conversation in 'input'"
# OpenAI's codes for a failed response (response.error.code), by the HTTP status of the failure.
FAILURE_CODES = {429: "rate_limit_exceeded", 400: "invalid_prompt"}


def new_response_id() -> str:
    """An id in OpenAI's format."""
    return f"resp_{uuid.uuid4().hex}"


def to_chat_request(request: ResponsesRequest) -> ChatCompletionRequest:
    """The Responses request as the equivalent chat request; what needs stored state is a 400."""
    if request.previous_response_id is not None:
        raise invalid_request(f"previous_response_id cannot be used: {STATELESS}", "previous_response_id")
    if request.conversation is not None:
        raise invalid_request(f"conversation cannot be used: {STATELESS}", "conversation")
    if request.background:
        raise invalid_request(
            "background responses are not supported: this server keeps no job to poll; "
            "use stream=true for long generations",
            "background",
        )
    if not request.input:
        raise invalid_request("input is required: a string or a non-empty list of items", "input")
    # The Responses models keep the chat models' constraints, so this validation cannot fail.
    return ChatCompletionRequest(
        messages=_messages(request.instructions, request.input),
        model=request.model,
        max_completion_tokens=request.max_output_tokens,
        parallel_tool_calls=request.parallel_tool_calls,
        response_format=_response_format(request.text),
        tool_choice=_tool_choice(request),
        tools=_tools(request),
        stream=request.stream,
        temperature=request.temperature,
        top_p=request.top_p,
        user=request.user,
        priority=request.priority,
    )


def _messages(instructions: str | None, items: str | list[InputItem]) -> list[ChatMessageParam]:
    messages = []
    if instructions:
        messages.append(ChatMessageParam(role="system", content=instructions))
    if isinstance(items, str):
        return [*messages, ChatMessageParam(role="user", content=items)]
    for index, item in enumerate(items):
        if isinstance(item, MessageItem):
            messages.append(ChatMessageParam(role=item.role, content=_content(item, index)))
        elif isinstance(item, FunctionCallItem):
            call = ChatCompletionMessageToolCall(
                id=item.call_id, function=FunctionCall(name=item.name, arguments=item.arguments)
            )
            previous = messages[-1] if messages else None
            # Calls that follow an assistant message are that message's calls, as in a chat history.
            if previous is not None and previous.role == "assistant":
                messages[-1] = previous.model_copy(
                    update={"tool_calls": [*(previous.tool_calls or []), call]}
                )
            else:
                messages.append(ChatMessageParam(role="assistant", tool_calls=[call]))
        elif isinstance(item, FunctionCallOutputItem):
            messages.append(
                ChatMessageParam(role="tool", tool_call_id=item.call_id, content=item.output_text())
            )
    return messages


def _content(item: MessageItem, index: int) -> str | list[ContentPart]:
    if isinstance(item.content, str):
        return item.content
    parts: list[ContentPart] = []
    for part_index, part in enumerate(item.content):
        if not isinstance(part, InputImagePart):
            parts.append(TextContentPart(type="text", text=part.text))
        elif part.image_url is None:
            raise invalid_request(
                "input_image needs image_url (a data URL): this server has no Files API for file_id",
                f"input[{index}].content[{part_index}].image_url",
            )
        else:
            parts.append(
                ImageContentPart(type="image_url", image_url=ImageUrl(url=part.image_url, detail=part.detail))
            )
    return parts


def _response_format(text: TextConfig | None) -> ResponseFormatParam | None:
    if text is None:
        return None
    form = text.format
    if isinstance(form, TextFormatJsonSchema):
        return ResponseFormatParam(
            type="json_schema",
            json_schema=JsonSchemaFormat(
                name=form.name, description=form.description, json_schema=form.json_schema, strict=form.strict
            ),
        )
    if isinstance(form, TextFormatJsonObject):
        return ResponseFormatParam(type="json_object")
    return ResponseFormatParam(type="text")


def _tools(request: ResponsesRequest) -> list[ChatCompletionTool] | None:
    if request.tools is None:
        return None
    tools = []
    for index, tool in enumerate(request.tools):
        if isinstance(tool, UnsupportedToolParam):
            raise invalid_request(
                f"tools of type '{tool.type}' are not supported; this server runs only 'function' tools",
                f"tools[{index}].type",
            )
        tools.append(
            ChatCompletionTool(
                type="function",
                function=FunctionDefinition(
                    name=tool.name,
                    description=tool.description,
                    parameters=tool.parameters,
                    strict=tool.strict,
                ),
            )
        )
    return tools


def _tool_choice(request: ResponsesRequest) -> str | NamedToolChoice | None:
    choice = request.tool_choice
    if isinstance(choice, UnsupportedToolChoice):
        raise invalid_request(
            f"tool_choice of type '{choice.type}' is not supported; use none, auto, required or a function",
            "tool_choice",
        )
    if isinstance(choice, FunctionToolChoice):
        return NamedToolChoice(type="function", function=NamedFunction(name=choice.name))
    return choice


def _usage(usage: Usage) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


class ResponseBuilder:
    """Response objects of one request: its id and creation time, the echoed settings, the status."""

    def __init__(self, request: ResponsesRequest, response_id: str, model: str) -> None:
        self.request = request
        self.response_id = response_id
        self.model = model
        self.created_at = int(time.time())

    def snapshot(
        self,
        output: list[OutputItem],
        finish_reason: str | None = None,
        usage: Usage | None = None,
        error: OpenAIError | None = None,
    ) -> ResponseObject:
        """The response: in progress without a finish reason, failed with an error, else finished."""
        request = self.request
        status: ResponseStatus = "in_progress"
        failure = None
        if error is not None:
            status = "failed"
            failure = ResponseError(
                code=FAILURE_CODES.get(error.status, "server_error"), message=error.message
            )
        elif finish_reason is not None:
            status = "incomplete" if finish_reason == "length" else "completed"
        incomplete = IncompleteDetails(reason="max_output_tokens") if status == "incomplete" else None
        return ResponseObject(
            id=self.response_id,
            created_at=self.created_at,
            status=status,
            completed_at=int(time.time()) if status == "completed" else None,
            error=failure,
            incomplete_details=incomplete,
            instructions=request.instructions,
            max_output_tokens=request.max_output_tokens,
            model=self.model,
            output=output,
            parallel_tool_calls=request.parallel_tool_calls is not False,
            temperature=request.temperature,
            text=request.text or TextConfig(),
            tool_choice=_echoed_tool_choice(request),
            tools=[tool for tool in request.tools or [] if isinstance(tool, FunctionToolParam)],
            top_p=request.top_p,
            usage=_usage(usage) if usage is not None else None,
            user=request.user,
            metadata=request.metadata or {},
        )


def _echoed_tool_choice(request: ResponsesRequest) -> str | FunctionToolChoice:
    choice = request.tool_choice
    if choice is None or isinstance(choice, UnsupportedToolChoice):
        return "auto"
    return choice


def _item_status(finish_reason: str) -> ItemStatus:
    return "incomplete" if finish_reason == "length" else "completed"


def new_message_id() -> str:
    """An output message id in OpenAI's format."""
    return f"msg_{uuid.uuid4().hex}"


def new_function_call_id() -> str:
    """A function_call item id in OpenAI's format."""
    return f"fc_{uuid.uuid4().hex}"


def response_from_completion(builder: ResponseBuilder, completion: ChatCompletion) -> ResponseObject:
    """The whole chat completion as the Response: a message for the text, a function_call item per call."""
    choice = completion.choices[0]
    calls = choice.message.tool_calls or []
    output: list[OutputItem] = []
    if choice.message.content or not calls:
        output.append(
            OutputMessage(
                id=new_message_id(),
                status=_item_status(choice.finish_reason),
                content=[OutputText(text=choice.message.content or "")],
            )
        )
    output.extend(
        OutputFunctionCall(
            id=new_function_call_id(),
            call_id=call.id,
            name=call.function.name,
            arguments=call.function.arguments,
            status="completed",
        )
        for call in calls
    )
    return builder.snapshot(output, choice.finish_reason, completion.usage)


class ResponseEventWriter:
    """Turns a generation's pieces into OpenAI's Responses events, numbering them in order.

    One output item is open at a time: the message while text arrives, or the function call being generated.
    """

    def __init__(self, builder: ResponseBuilder) -> None:
        self._builder = builder
        self._sequence_number = 0
        self._done: list[OutputItem] = []
        self._open: OutputMessage | OutputFunctionCall | None = None
        self._open_call_index: int | None = None

    def _next(self) -> int:
        number = self._sequence_number
        self._sequence_number += 1
        return number

    def _lifecycle(self, kind: LifecycleEventType, response: ResponseObject) -> ResponseLifecycleEvent:
        return ResponseLifecycleEvent(type=kind, sequence_number=self._next(), response=response)

    def _item_event(self, kind: OutputItemEventType, item: OutputItem) -> OutputItemEvent:
        # A copy, because the open item keeps growing after the event is made.
        return OutputItemEvent(
            type=kind,
            sequence_number=self._next(),
            output_index=len(self._done),
            item=item.model_copy(deep=True),
        )

    def _part_event(self, kind: ContentPartEventType, message: OutputMessage, text: str) -> ContentPartEvent:
        return ContentPartEvent(
            type=kind,
            sequence_number=self._next(),
            item_id=message.id,
            output_index=len(self._done),
            content_index=0,
            part=OutputText(text=text),
        )

    def start(self) -> list[StreamEvent]:
        """response.created and response.in_progress."""
        response = self._builder.snapshot([])
        return [
            self._lifecycle("response.created", response),
            self._lifecycle("response.in_progress", response),
        ]

    def text(self, delta: str) -> list[StreamEvent]:
        """A text delta, after the events that open the message if this is its first text."""
        events = [] if isinstance(self._open, OutputMessage) else [*self._close(), *self._open_message()]
        message = self._open
        assert isinstance(message, OutputMessage)
        message.content[0].text += delta
        events.append(
            OutputTextDeltaEvent(
                sequence_number=self._next(),
                item_id=message.id,
                output_index=len(self._done),
                content_index=0,
                delta=delta,
            )
        )
        return events

    def tool_call(self, delta: ChoiceDeltaToolCall) -> list[StreamEvent]:
        """A piece of a function call; the first piece of a call closes the open item and opens the call."""
        events: list[StreamEvent] = []
        if delta.index != self._open_call_index:
            events.extend(self._close())
            name = delta.function.name if delta.function is not None else None
            self._open = OutputFunctionCall(
                id=new_function_call_id(),
                call_id=delta.id or "",
                name=name or "",
                arguments="",
                status="in_progress",
            )
            self._open_call_index = delta.index
            events.append(self._item_event("response.output_item.added", self._open))
        call = self._open
        assert isinstance(call, OutputFunctionCall)
        arguments = delta.function.arguments if delta.function is not None else None
        if arguments:
            call.arguments += arguments
            events.append(
                FunctionCallArgumentsDeltaEvent(
                    sequence_number=self._next(),
                    item_id=call.id,
                    output_index=len(self._done),
                    delta=arguments,
                )
            )
        return events

    def _open_message(self) -> list[StreamEvent]:
        message = OutputMessage(id=new_message_id(), status="in_progress", content=[])
        events: list[StreamEvent] = [self._item_event("response.output_item.added", message)]
        events.append(self._part_event("response.content_part.added", message, ""))
        message.content.append(OutputText(text=""))
        self._open = message
        return events

    def _close(self, status: ItemStatus = "completed") -> list[StreamEvent]:
        item = self._open
        events: list[StreamEvent] = []
        if isinstance(item, OutputMessage):
            text = item.content[0].text
            events.append(
                OutputTextDoneEvent(
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=len(self._done),
                    content_index=0,
                    text=text,
                )
            )
            events.append(self._part_event("response.content_part.done", item, text))
        elif isinstance(item, OutputFunctionCall):
            events.append(
                FunctionCallArgumentsDoneEvent(
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=len(self._done),
                    arguments=item.arguments,
                )
            )
        if item is not None:
            item.status = status
            events.append(self._item_event("response.output_item.done", item))
            self._done.append(item)
        self._open, self._open_call_index = None, None
        return events

    def finish(self, finish_reason: str, usage: Usage | None) -> list[StreamEvent]:
        """Closes the open item; ends with response.completed, or response.incomplete at the token limit."""
        # A reply with neither text nor calls is still one (empty) message, as in the whole response.
        events = self._open_message() if not self._done and self._open is None else []
        events.extend(self._close(_item_status(finish_reason)))
        response = self._builder.snapshot(list(self._done), finish_reason, usage)
        kind: LifecycleEventType = (
            "response.incomplete" if response.status == "incomplete" else "response.completed"
        )
        events.append(self._lifecycle(kind, response))
        return events

    def fail(self, error: OpenAIError) -> list[StreamEvent]:
        """An error event, then response.failed with the items finished before the failure."""
        return [
            ErrorEvent(
                sequence_number=self._next(), code=error.code, message=error.message, param=error.param
            ),
            self._lifecycle("response.failed", self._builder.snapshot(list(self._done), error=error)),
        ]


def sse_response_event(event: StreamEvent) -> str:
    """One server-sent event with OpenAI's `event:` line; aliases (`schema`) as in the JSON body."""
    return f"event: {event.type}\ndata: {event.model_dump_json(by_alias=True)}\n\n"


class ResponsesServing:
    """Serves /v1/responses through ChatServing."""

    def __init__(self, chat: ChatServing) -> None:
        self._chat = chat

    async def open(
        self, request: ResponsesRequest, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> GenerationStream:
        """Starts the generation; bad requests and errors before output raise OpenAIError."""
        return await self._chat.open(to_chat_request(request), priority, request_id)

    async def complete(
        self, request: ResponsesRequest, stream: GenerationStream, response_id: str
    ) -> ResponseObject:
        """The whole response."""
        completion = await self._chat.complete(stream, response_id)
        return response_from_completion(ResponseBuilder(request, response_id, completion.model), completion)

    async def events(
        self, request: ResponsesRequest, stream: GenerationStream, response_id: str
    ) -> AsyncIterator[str]:
        """The SSE events; a failure mid-stream ends them with an error event and response.failed."""
        writer = ResponseEventWriter(ResponseBuilder(request, response_id, stream.first.model))
        for event in writer.start():
            yield sse_response_event(event)
        # The finish reason and the usage may come in different pieces, so the response ends with the stream.
        finish_reason, usage = "stop", None
        try:
            async for piece in stream.pieces():
                events = writer.text(piece.delta) if piece.delta else []
                for call in piece.tool_calls:
                    events.extend(writer.tool_call(call))
                for event in events:
                    yield sse_response_event(event)
                finish_reason = piece.finish_reason or finish_reason
                usage = piece.usage or usage
        except OpenAIError as exc:
            for event in writer.fail(exc):
                yield sse_response_event(event)
            return
        for event in writer.finish(finish_reason, usage):
            yield sse_response_event(event)
