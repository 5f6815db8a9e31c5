"""``POST /v1/completions``: raw text (or token ids) continued by the base model, no URIAL prompt."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from untuned.assistant import Completion
from untuned.conversation import RenderedPrompt
from untuned.server.completions.wire import CompletionRequest, CompletionResponse, TextChoice
from untuned.server.errors import BadRequest
from untuned.server.logprobs import completion_logprobs
from untuned.server.serving import Serving, serving
from untuned.server.wire import ERRORS, STREAMED, Usage, new_id, now
from untuned.server.worker import cancel_on_disconnect

router = APIRouter()


def split_at_prefix(serve: Serving, text: str) -> RenderedPrompt:
    """A raw prompt that begins with the server's own URIAL prefix reuses that prefix's cached evaluation
    (as the chat endpoint does, and as llama.cpp's server reuses a cached prompt); any other is one body."""
    prefix = serve.assistant.conversation().render_prefix()
    if prefix and len(text) > len(prefix) and text.startswith(prefix):
        return RenderedPrompt(prefix=prefix, body=text[len(prefix) :])
    return RenderedPrompt(prefix="", body=text)


async def scored(serve: Serving, body: CompletionRequest, echoed: list[int] | None, completion: Completion | None):
    """The choice's logprobs (the prompt's too with echo), scored on the model."""
    entries = completion.logprobs if completion else []
    return await serve.on_model(
        completion_logprobs, serve.assistant.backend, echoed, entries, body.logprobs or 0, as_ids=body.return_tokens_as_token_ids
    )


@router.post("/v1/completions", response_model=CompletionResponse, operation_id="completions", responses={**ERRORS, **STREAMED})
@cancel_on_disconnect
async def completions(body: CompletionRequest, raw: Request, serve: Serving = Depends(serving)):
    backend, prompts = serve.assistant.backend, body.prompts
    for prompt in prompts:
        if isinstance(prompt, list):
            serve.check_token_ids(prompt, "prompt")
    sampling = await serve.sampling_for(body, 16, logprobs=max(body.logprobs or 0, 1) if body.logprobs is not None else 0)
    rendered = [
        split_at_prefix(serve, p) if isinstance(p, str) else RenderedPrompt(prefix="", body="", ids=tuple(p)) for p in prompts
    ]
    for one in rendered:
        await serve.check_fits(backend, one, body.max_tokens or None)
    if body.stream:
        streamed, _ = await serve.run(
            body, lambda: serve.assistant.complete_prompt(rendered[0], sampling=sampling, clean=False), chat=False
        )
        return streamed
    answered = await asyncio.gather(*(_answers(serve, body, prompt, one, sampling) for prompt, one in zip(prompts, rendered)))
    choices = [choice for each, _ in answered for choice in each]
    for index, choice in enumerate(choices):  # prompt i's j-th choice is i * n + j, as OpenAI numbers them
        choice.index = index
    usages = [use for _, use in answered]
    use = Usage(
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        completion_tokens=sum(u.completion_tokens for u in usages),
        total_tokens=sum(u.total_tokens for u in usages),
    )
    return CompletionResponse(id=new_id("cmpl"), created=now(), model=serve.model, usage=use, choices=choices)


def _begin(serve: Serving, rendered: RenderedPrompt, sampling):
    return serve.assistant.complete_prompt(rendered, sampling=sampling, clean=False)


async def _answers(serve: Serving, body: CompletionRequest, prompt, rendered: RenderedPrompt, sampling):
    """One prompt's ``n`` choices and its usage."""
    backend = serve.assistant.backend
    text = prompt if isinstance(prompt, str) else None
    echoed, prompt_text = None, ""
    if body.echo:  # off the event loop: tokenizing grows with the prompt
        echoed = await serve.off_loop(backend.tokenize, text, add_special=True) if text is not None else list(prompt)
        prompt_text = text if text is not None else await serve.off_loop(backend.detokenize, prompt)
        window = backend.context_length
        if body.logprobs is not None and window is not None and len(echoed) > window:
            raise BadRequest(
                f"echo with logprobs scores the whole prompt: it is {len(echoed)} tokens, over this model's context "
                f"window of {window} by {len(echoed) - window}; shorten the prompt or leave out logprobs",
                param="prompt",
                code="context_length_exceeded",
            )

    def begin(s):
        return _begin(serve, rendered, s)

    made: list[tuple[str, Completion | None]] = [("", None)]
    if not (body.echo and body.max_tokens == 0):
        made = await serve.choices(body, begin, serve.seeded(sampling, body.n), chat=False)
    choices = []
    for generated, completion in made:
        logprobs = await scored(serve, body, echoed, completion) if body.logprobs is not None else None
        finish = completion.finish_reason if completion else "length"
        choices.append(TextChoice(index=0, text=prompt_text + generated, logprobs=logprobs, finish_reason=finish))
    if made[0][1] is None:
        count = len(echoed) if echoed is not None else 0
        return choices, Usage(prompt_tokens=count, completion_tokens=0, total_tokens=count)
    return choices, serve.total_usage([completion for _, completion in made])
