"""``POST /v1/chat/completions``: OpenAI messages answered in a URIAL conversation."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from untuned.assistant import Assistant
from untuned.conversation import Conversation, SystemMode
from untuned.server.errors import BadRequest
from untuned.server.logprobs import chat_logprobs
from untuned.server.schema import ERRORS, ChatChoice, ChatMessageOut, ChatRequest, ChatResponse, Message, new_id, now
from untuned.server.serving import Serving, serving

router = APIRouter()


def build_conversation(assistant: Assistant, messages: list[Message], mode: SystemMode) -> Conversation:
    """Map OpenAI messages onto a URIAL conversation (system text, then alternating turns)."""
    conversation = assistant.conversation()
    system = [m.text.strip() for m in messages if m.role in ("system", "developer") and m.text.strip()]
    if system:
        client = "\n\n".join(system)
        base = assistant.prompt.system.strip()
        conversation.system = client if mode == "replace" or not base else f"{base}\n\n{client}"
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if message.role in ("system", "developer"):
            continue
        text = message.text.strip()
        if message.role == "user" and not text:
            raise BadRequest(f"messages[{index}] is an empty user message", param=f"messages.{index}.content")
        if turns and turns[-1][0] == message.role:  # consecutive turns of one role are joined
            turns[-1] = (message.role, f"{turns[-1][1]}\n\n{text}")
        else:
            turns.append((message.role, text))
    if not turns or turns[-1][0] != "user":
        raise BadRequest("the last message (after system messages) must be the user's", param="messages")
    if turns[0][0] != "user":
        raise BadRequest("the conversation must start with a user message (after system messages)", param="messages")
    for role, text in turns:
        (conversation.add_user if role == "user" else conversation.add_assistant)(text)
    return conversation


@router.post("/v1/chat/completions", response_model=ChatResponse, responses=ERRORS)
async def chat_completions(body: ChatRequest, serve: Serving = Depends(serving)):
    assistant = serve.assistant
    conversation = build_conversation(assistant, body.messages, serve.config.system_mode)
    top = body.top_logprobs or 0
    sampling = serve.sampling_for(body, serve.config.default_max_tokens, logprobs=max(top, 1) if body.logprobs else 0)
    if body.stream:
        streamed, _ = await serve.run(body, lambda: assistant.complete(conversation, sampling=sampling), chat=True)
        return streamed
    made = await serve.choices(
        body, lambda s: assistant.complete(conversation, sampling=s), serve.seeded(sampling, body.n), chat=True
    )
    answers = []
    for index, (_, completion) in enumerate(made):
        logprobs = chat_logprobs(completion.logprobs, top) if body.logprobs and completion else None
        message = ChatMessageOut(content=completion.text if completion else "")
        answers.append(
            ChatChoice(
                index=index, message=message, logprobs=logprobs, finish_reason=completion.finish_reason if completion else "stop"
            )
        )
    return ChatResponse(
        id=new_id("chatcmpl"),
        created=now(),
        model=serve.model,
        choices=answers,
        usage=serve.total_usage([completion for _, completion in made]),
    )
