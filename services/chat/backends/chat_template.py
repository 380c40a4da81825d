"""ChatTemplate: renders a conversation, tools and tool turns included, with a model's Jinja chat template.

Templates that know tools (Qwen 2.5, Hermes, Llama 3.1 ...) get them as Hugging Face passes them: `tools`,
assistant `tool_calls` whose arguments are a mapping, and "tool" turns. Whether a template knows them is
found by rendering a probe conversation once; templates that do not (SmolLM2's ChatML, plain transcripts)
get the text protocol of services.chat.tools instead: a system section that lists the tools, calls written
into the assistant's text, and results as user turns in <tool_response> tags.
"""

from typing import Any, cast

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from services.chat.backends.base import FunctionTool, Message, ToolCall
from services.chat.tools import (
    call_arguments_object,
    tool_call_text,
    tool_definition,
    tool_response_text,
    tools_system_prompt,
)

# ChatML, llama.cpp's own fallback, for GGUFs that carry no template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_PROBE_DESCRIPTION = "multai-probe-description"
_PROBE_ARGUMENT = "multai-probe-argument"
_PROBE_RESULT = "multai-probe-result"


class ChatTemplate:
    """A model's chat template, with what it knows about tools found out once."""

    def __init__(self, template: str, bos_token: str, eos_token: str) -> None:
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token=bos_token)
        self.stop = [eos_token] if eos_token else []
        self.native_tools = self._renders_tools()

    def render(self, messages: list[Message], tools: list[FunctionTool]) -> str:
        """The prompt text, ending where the assistant's reply begins."""
        if self.native_tools:
            return self._render_native(messages, tools)
        return self._render_text_protocol(messages, tools)

    def _render_native(self, messages: list[Message], tools: list[FunctionTool]) -> str:
        names_by_call = {c.id: c.name for m in messages for c in m.tool_calls}
        rendered: list[dict[str, Any]] = []
        for message in messages:
            entry: dict[str, Any] = {"role": message.role, "content": message.content}
            if message.name:
                entry["name"] = message.name
            if message.tool_calls:
                entry["tool_calls"] = [_native_call(c) for c in message.tool_calls]
            if message.role == "tool":
                entry["tool_call_id"] = message.tool_call_id
                entry["name"] = names_by_call.get(message.tool_call_id, "")
            rendered.append(entry)
        definitions = [tool_definition(t) for t in tools] or None
        # llama-cpp-python types these as its TypedDicts of OpenAI messages, which the dicts match.
        return self._formatter(messages=cast(Any, rendered), tools=cast(Any, definitions)).prompt

    def _render_text_protocol(self, messages: list[Message], tools: list[FunctionTool]) -> str:
        rendered: list[dict[str, Any]] = []
        previous_role = ""
        for message in messages:
            if message.role == "tool":
                result = tool_response_text(message.content)
                # Consecutive results answer one assistant turn, so they share one user turn.
                if previous_role == "tool":
                    rendered[-1]["content"] += "\n" + result
                else:
                    rendered.append({"role": "user", "content": result})
            else:
                parts = [message.content] if message.content else []
                parts += [tool_call_text(c) for c in message.tool_calls]
                entry: dict[str, Any] = {"role": message.role, "content": "\n".join(parts)}
                if message.name:
                    entry["name"] = message.name
                rendered.append(entry)
            previous_role = message.role
        if tools:
            section = tools_system_prompt(tools)
            if rendered and rendered[0]["role"] in ("system", "developer"):
                rendered[0]["content"] = f"{rendered[0]['content']}\n\n{section}"
            else:
                rendered.insert(0, {"role": "system", "content": section})
        return self._formatter(messages=cast(Any, rendered)).prompt

    def _renders_tools(self) -> bool:
        """Whether the template shows tools, assistant calls and tool results (each probe text appears)."""
        call = ToolCall("call_probe", "probe_function", f'{{"probe": "{_PROBE_ARGUMENT}"}}')
        probe = [
            Message("user", "probe"),
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", _PROBE_RESULT, tool_call_id=call.id),
        ]
        tool = FunctionTool("probe_function", _PROBE_DESCRIPTION, {"type": "object", "properties": {}})
        try:
            prompt = self._render_native(probe, [tool])
        except Exception:  # A template may raise anything (raise_exception, undefined names) on tool turns.
            return False
        return all(marker in prompt for marker in (_PROBE_DESCRIPTION, _PROBE_ARGUMENT, _PROBE_RESULT))


def _native_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call_arguments_object(call)},
    }
