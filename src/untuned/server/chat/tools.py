"""Tool calls on ``/v1/chat/completions`` (:mod:`untuned.tools`): the request's tools into the URIAL prompt
and a grammar, the answer back as OpenAI's ``tool_calls``, whole or streamed in OpenAI's chunk shapes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from untuned.constraint import schema_problem
from untuned.errors import UntunedError
from untuned.server.chat.wire import ChatChoice, ChatMessageOut, ChatRequest, ChatResponse, chat_chunk
from untuned.server.errors import BadRequest
from untuned.server.wire import new_id, now
from untuned.tools import Tool, call_grammar, chosen_tools, parse_call, tools_from_openai


def offered_tools(body: ChatRequest) -> tuple[list[Tool], list[Tool], bool]:
    """(every tool offered, the tools the answer may call, whether text is allowed); nothing offered with
    ``tool_choice: none`` or no tools."""
    if not body.tools:
        if body.tool_choice not in (None, "none", "auto"):
            raise BadRequest("tool_choice asks for a call, but no tools were sent", param="tool_choice")
        return [], [], True
    try:
        tools = tools_from_openai(body.tools)
        choice = body.tool_choice.model_dump() if hasattr(body.tool_choice, "model_dump") else body.tool_choice
        callable_, text = chosen_tools(tools, choice)
    except UntunedError as exc:
        raise BadRequest(str(exc), param="tools") from None
    return (tools, callable_, text) if callable_ else ([], [], True)


async def tool_grammar(serve, tools: list[Tool], text_allowed: bool) -> str:
    """The grammar of an answer that is text or one call (``text_allowed``), or the call alone, compiled by the
    backend on a worker thread: a tool schema it cannot hold is a 400 before the request waits."""
    for tool in tools:  # past the bounds: named here, before any grammar is made of it
        found = schema_problem(tool.parameters, f"tools[{tool.name}].parameters")
        if found:
            raise BadRequest(f"tools: {found}", param="tools")
    grammar = call_grammar(tools, text_allowed=text_allowed)
    await serve.off_loop(serve.check_constraint, "tools", "tools", grammar=grammar)
    return grammar


def message_for(text: str, tools: list[Tool], finish: str) -> tuple[ChatMessageOut, str]:
    """The assistant message of an answer: its call as ``tool_calls`` (finish ``tool_calls``), else its text."""
    call = parse_call(text, tools) if tools else None
    if call is None:
        return ChatMessageOut(content=text), finish
    calls = [{"id": new_id("call"), "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]
    return ChatMessageOut(content=None, tool_calls=calls), "tool_calls"


async def answered_with_tools(body: ChatRequest, serve, begin, sampling, tools: list[Tool]):
    """Every choice whole (a call is only known once its JSON closes); with ``stream``, sent as OpenAI chunks."""
    whole = body.model_copy(update={"stream": False})
    made = await serve.choices(whole, begin, serve.seeded(sampling, body.n), chat=True)
    choices = []
    for index, (_, completion) in enumerate(made):
        message, finish = message_for(
            completion.text if completion else "", tools, completion.finish_reason if completion else "stop"
        )
        choices.append(ChatChoice(index=index, message=message, finish_reason=finish))
    total = serve.total_usage([completion for _, completion in made])
    response = ChatResponse(id=new_id("chatcmpl"), created=now(), model=serve.model, choices=choices, usage=total)
    if not body.stream:
        return response
    include = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(_chunks(response, include), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _chunks(response: ChatResponse, include_usage: bool) -> AsyncIterator[str]:
    choice = response.choices[0]

    def data(payload: dict) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    ident, created, model = response.id, response.created, response.model
    yield data(
        chat_chunk(ident, created, model, {"role": "assistant", "content": None if choice.message.tool_calls else ""}, None)
    )
    if choice.message.tool_calls:
        calls = [{"index": i, **call} for i, call in enumerate(choice.message.tool_calls)]
        yield data(chat_chunk(ident, created, model, {"tool_calls": calls}, None))
    elif choice.message.content:
        yield data(chat_chunk(ident, created, model, {"content": choice.message.content}, None))
    yield data(chat_chunk(ident, created, model, {}, choice.finish_reason))
    if include_usage:
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model, "choices": []}
        yield data({**chunk, "usage": response.usage.model_dump()})
    yield "data: [DONE]\n\n"
