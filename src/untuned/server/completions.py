"""``POST /v1/completions``: raw text (or token ids) continued by the base model, no URIAL prompt."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from untuned.assistant import Completion
from untuned.conversation import RenderedPrompt
from untuned.server.errors import BadRequest
from untuned.server.logprobs import completion_logprobs
from untuned.server.responses import CompletionResponse, TextChoice, new_id, now
from untuned.server.schema import ERRORS, STREAMED, CompletionRequest, Usage
from untuned.server.serving import Serving, serving
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
    backend, ids, text = serve.assistant.backend, body.token_ids, body.text
    if text is not None and not text:
        raise BadRequest("prompt is empty", param="prompt")
    serve.check_token_ids(ids, "prompt")
    sampling = await serve.sampling_for(body, 16, logprobs=max(body.logprobs or 0, 1) if body.logprobs is not None else 0)
    rendered = split_at_prefix(serve, text) if text is not None else RenderedPrompt(prefix="", body="", ids=tuple(ids or ()))
    await serve.check_fits(backend, rendered, body.max_tokens or None)
    echoed = (ids if ids is not None else backend.tokenize(text, add_special=True)) if body.echo else None
    prompt_text = (text if text is not None else backend.detokenize(ids)) if body.echo else ""

    def begin(s):
        return serve.assistant.complete_prompt(rendered, sampling=s, clean=False)

    if body.stream:
        streamed, _ = await serve.run(body, lambda: begin(sampling), chat=False)
        return streamed
    made: list[tuple[str, Completion | None]] = [("", None)]
    if not (body.echo and body.max_tokens == 0):
        made = await serve.choices(body, begin, serve.seeded(sampling, body.n), chat=False)
    answers = []
    for index, (generated, completion) in enumerate(made):
        logprobs = await scored(serve, body, echoed, completion) if body.logprobs is not None else None
        answers.append(
            TextChoice(
                index=index,
                text=prompt_text + generated,
                logprobs=logprobs,
                finish_reason=completion.finish_reason if completion else "length",
            )
        )
    if made[0][1] is None:
        count = len(echoed) if echoed is not None else 0
        use = Usage(prompt_tokens=count, completion_tokens=0, total_tokens=count)
    else:
        use = serve.total_usage([completion for _, completion in made])
    return CompletionResponse(id=new_id("cmpl"), created=now(), model=serve.model, usage=use, choices=answers)
