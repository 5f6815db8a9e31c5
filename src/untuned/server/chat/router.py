"""``POST /v1/chat/completions``: OpenAI messages answered in a URIAL conversation."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from untuned.server.chat.conversation import build_conversation, chat_messages, plain_prompt
from untuned.server.chat.tools import answered_with_tools, offered_tools, tool_grammar
from untuned.server.chat.wire import ChatChoice, ChatMessageOut, ChatRequest, ChatResponse
from untuned.server.errors import BadRequest
from untuned.server.logprobs import chat_logprobs
from untuned.server.serving import Serving, serving
from untuned.server.wire import ERRORS, STREAMED, new_id, now
from untuned.server.worker import cancel_on_disconnect

router = APIRouter()


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
