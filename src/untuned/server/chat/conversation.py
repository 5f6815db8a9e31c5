"""OpenAI messages as a URIAL conversation: what the chat endpoint answers and the workbench shows."""

from __future__ import annotations

import json

from untuned.assistant import Assistant
from untuned.conversation import Conversation, RenderedPrompt, SystemMode
from untuned.prompt import PromptSet
from untuned.server.errors import BadRequest
from untuned.server.serving import Serving
from untuned.server.wire import InlinePromptSet, Message
from untuned.tools import Tool, call_text


def build_conversation(
    assistant: Assistant,
    messages: list[Message],
    mode: SystemMode,
    *,
    prompt: PromptSet | None = None,
    tools: tuple[Tool, ...] = (),
) -> Conversation:
    """Map OpenAI messages onto a URIAL conversation (system text, then alternating turns; an assistant's call
    and the tool's result as turns of their own), in the prompt set ``prompt`` (default: the assistant's)."""
    conversation = Conversation(prompt) if prompt is not None else assistant.conversation()
    conversation.tools = tools
    system = [m.text.strip() for m in messages if m.role in ("system", "developer") and m.text.strip()]
    if system:
        client = "\n\n".join(system)
        base = assistant.prompt.system.strip()
        conversation.system = client if mode == "replace" or not base else f"{base}\n\n{client}"
    turns = _turns(messages)
    if not turns or turns[-1][0] not in ("user", "tool"):
        raise BadRequest("the last message (after system messages) must be the user's or a tool's result", param="messages")
    if turns[0][0] != "user":
        raise BadRequest("the conversation must start with a user message (after system messages)", param="messages")
    add = {"user": conversation.add_user, "assistant": conversation.add_assistant}
    try:
        for role, text, name in turns:
            conversation.add_tool_result(name, text) if role == "tool" else add[role](text)
    except ValueError as exc:
        raise BadRequest(f"messages: {exc}", param="messages") from None
    return conversation


def _turns(messages: list[Message]) -> list[tuple[str, str, str]]:
    """(role, text, tool name) of each turn; consecutive user (or assistant text) messages joined."""
    turns: list[tuple[str, str, str]] = []
    calls: dict[str, str] = {}  # call id -> tool name
    for index, message in enumerate(messages):
        if message.role in ("system", "developer"):
            continue
        text = message.text.strip()
        if message.role == "user" and not text:
            raise BadRequest(f"messages[{index}] is an empty user message", param=f"messages.{index}.content")
        if message.role == "assistant" and message.tool_calls:
            if len(message.tool_calls) > 1:
                raise BadRequest(f"messages[{index}] makes {len(message.tool_calls)} calls; an answer here makes at most one")
            call = message.tool_calls[0]
            calls[call.id] = call.function.name
            try:
                turns.append(("assistant", call_text(call.function.name, call.function.arguments), ""))
            except json.JSONDecodeError:
                raise BadRequest(f"messages[{index}].tool_calls[0].function.arguments is not JSON") from None
            continue
        if message.role == "tool":
            name = calls.get(message.tool_call_id or "") or message.name
            if not name:
                raise BadRequest(f"messages[{index}]: tool_call_id {message.tool_call_id!r} matches no earlier call")
            turns.append(("tool", text, name))
            continue
        if turns and turns[-1][0] == message.role and not turns[-1][1].startswith('{"name"'):
            turns[-1] = (message.role, f"{turns[-1][1]}\n\n{text}", "")
        else:
            turns.append((message.role, text, ""))
    return turns


def plain_prompt(messages: list[Message]) -> RenderedPrompt:
    """The conversation as plain text with no URIAL prefix: what a base model continues unaligned."""
    turns = [m.text.strip() for m in messages if m.role in ("user", "assistant") and m.text.strip()]
    if not turns or messages[-1].role != "user":
        raise BadRequest("the last message must be the user's", param="messages")
    return RenderedPrompt(prefix="", body="\n\n".join(turns) + "\n\n")


def chat_messages(messages: list[Message]) -> list[dict[str, str]]:
    """``messages`` as a chat template reads them (a developer's message is a system message)."""
    return [{"role": m.role if m.role != "developer" else "system", "content": m.text} for m in messages]


async def rendered_for(
    serve: Serving, messages: list[Message], prompt: str | None, inline: InlinePromptSet | None = None
) -> RenderedPrompt:
    """What the model sees for ``messages`` in the prompt set named ``prompt`` ('none': plain text) or given inline."""
    chosen = await serve.chosen_prompt(prompt, inline)
    if chosen is None:
        return plain_prompt(messages)
    return build_conversation(serve.assistant, messages, serve.config.system_mode, prompt=chosen).render()
