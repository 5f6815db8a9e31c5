"""``POST /v1/chat/completions``: OpenAI messages answered in a URIAL conversation."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request

from untuned.assistant import Assistant
from untuned.conversation import Conversation, RenderedPrompt, SystemMode
from untuned.prompt import PromptSet
from untuned.server.errors import BadRequest
from untuned.server.logprobs import chat_logprobs
from untuned.server.responses import ChatChoice, ChatMessageOut, ChatResponse, new_id, now
from untuned.server.schema import ERRORS, STREAMED, ChatRequest, InlinePromptSet, Message
from untuned.server.serving import Serving, serving
from untuned.server.tool_calls import answered_with_tools, offered_tools, tool_grammar
from untuned.server.worker import cancel_on_disconnect
from untuned.tools import Tool, call_text

router = APIRouter()


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


async def answered(body: ChatRequest, serve: Serving, begin, sampling, *, model: str, top: int = 0):
    """The stream, or every choice's answer (with its logprobs when asked) as one chat response."""
    if body.stream:
        streamed, _ = await serve.run(body, lambda: begin(sampling), chat=True)
        return streamed
    made = await serve.choices(body, begin, serve.seeded(sampling, body.n), chat=True)
    answers = []
    for index, (_, completion) in enumerate(made):
        logprobs = chat_logprobs(completion.logprobs, top) if body.logprobs and completion else None
        message = ChatMessageOut(content=completion.text if completion else "")
        finish = completion.finish_reason if completion else "stop"
        answers.append(ChatChoice(index=index, message=message, logprobs=logprobs, finish_reason=finish))
    usage = serve.total_usage([completion for _, completion in made])
    return ChatResponse(id=new_id("chatcmpl"), created=now(), model=model, choices=answers, usage=usage)


async def aligned_answer(body: ChatRequest, serve: Serving):
    """The aligned (instruct) model's answer, in its own chat template: the paper's comparison."""
    if body.prompt is not None or body.prompt_set is not None:
        raise BadRequest(f"{serve.aligned_name} answers in its own chat template: it takes no prompt set", param="prompt")
    messages = chat_messages(body.messages)
    aligned = serve.aligned
    sampling = await serve.sampling_for(body, serve.config.default_max_tokens, logprobs=0)
    rendered = await serve.off_loop(aligned.backend.chat_prompt, messages)  # type: ignore[union-attr]
    await serve.check_fits(aligned.backend, rendered, asked_max_tokens(body))

    def begin(s):
        return aligned.complete_chat(messages, sampling=s)

    return await answered(body, serve, begin, sampling, model=serve.aligned_name)


def asked_max_tokens(body: ChatRequest) -> int | None:
    """The max_tokens the client asked for itself (None: the server's default, cut to the window)."""
    return body.max_completion_tokens or body.max_tokens


@router.post("/v1/chat/completions", name="chat", response_model=ChatResponse, responses={**ERRORS, **STREAMED})
@cancel_on_disconnect
async def chat_completions(body: ChatRequest, raw: Request, serve: Serving = Depends(serving)):
    assistant = serve.assistant
    if serve.aligned is not None and body.model == serve.aligned_name:
        return await aligned_answer(body, serve)
    chosen = await serve.chosen_prompt(body.prompt, body.prompt_set)
    top = body.top_logprobs or 0
    sampling = await serve.sampling_for(body, serve.config.default_max_tokens, logprobs=max(top, 1) if body.logprobs else 0)
    offered, callable_, text_allowed = offered_tools(body)
    if offered:
        if chosen is None:
            raise BadRequest("tools need a URIAL prompt set (its tool-use examples): not prompt 'none'", param="tools")
        sampling = sampling.model_copy(update={"grammar": await tool_grammar(serve, callable_, text_allowed)})
    if chosen is None:  # no URIAL prefix: the base model continues the plain text
        rendered = plain_prompt(body.messages)

        def begin(s):
            return assistant.complete_prompt(rendered, sampling=s)
    else:
        conversation = build_conversation(assistant, body.messages, serve.config.system_mode, prompt=chosen, tools=tuple(offered))
        rendered = conversation.render()

        def begin(s):
            return assistant.complete(conversation, sampling=s)

    await serve.check_fits(assistant.backend, rendered, asked_max_tokens(body))
    if offered:
        return await answered_with_tools(body, serve, begin, sampling, callable_)
    return await answered(body, serve, begin, sampling, model=serve.model, top=top)
