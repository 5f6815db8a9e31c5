"""untuned's own endpoints for the chat page (the URIAL workbench): the prompt sets a request may name,
the exact prompt the model sees for a conversation, and the shift of every token of an answer.

Each is one endpoint over the library, so the page, ``untuned ask --show-prompt`` and ``untuned
shift`` agree on every character and number.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from untuned.answers import AnswerItem
from untuned.backends import ChatTemplated
from untuned.errors import UntunedError
from untuned.server.chat import rendered_for
from untuned.server.errors import BadRequest
from untuned.server.extensions import ExampleOut, PromptRequest, PromptSetOut, PromptView, ShiftRequest
from untuned.server.schema import ERRORS
from untuned.server.serving import Serving, serving
from untuned.server.worker import cancel_on_disconnect
from untuned.shift import ShiftAnalyzer
from untuned.shift.records import TokenShift

router = APIRouter(prefix="/v1/untuned", tags=["untuned"])


class ShiftView(BaseModel):
    """Each answer token's rank under the base model with no URIAL prefix, and the category it falls in;
    in pair mode also its probability and rank under the aligned model, and KL(aligned || base)."""

    mode: str
    tokens: list[TokenShift]
    ratios: dict[str, float] = Field(description="Share of unshifted, marginal and shifted tokens.")
    truncated: bool


@router.get("/prompts", response_model=list[PromptSetOut], responses=ERRORS)
async def prompts(serve: Serving = Depends(serving)) -> list[PromptSetOut]:
    """The prompt sets a request may name (``prompt``), with their system text and examples."""
    active = serve.assistant.prompt.name
    return [
        PromptSetOut(
            name=p.name,
            description=p.description,
            system=p.system,
            active=p.name == active,
            examples=[ExampleOut(query=e.query, answer=e.answer) for e in p.examples],
        )
        for p in sorted(serve.prompts.values(), key=lambda p: (p.name != active, p.name))
    ]


@router.post("/prompt", response_model=PromptView, responses=ERRORS)
async def prompt(body: PromptRequest, serve: Serving = Depends(serving)) -> PromptView:
    """The exact prompt the model sees for ``messages`` (the last one the user's), and its size."""
    rendered = rendered_for(serve, body.messages, body.prompt, body.prompt_set)
    backend = serve.assistant.backend

    def count() -> tuple[int, int]:
        ids = backend.tokenize_prompt(rendered) if isinstance(backend, ChatTemplated) else backend.tokenize(rendered.text)
        return len(ids), len(backend.tokenize(rendered.prefix, add_special=True)) if rendered.prefix else 0

    total, prefix = await asyncio.to_thread(count)
    name = body.prompt_set.name if body.prompt_set else (body.prompt or serve.assistant.prompt.name)
    return PromptView(
        prompt=name, text=rendered.text, prompt_tokens=total, prefix_tokens=prefix, context_length=backend.context_length
    )


@router.post("/shift", response_model=ShiftView, responses=ERRORS)
@cancel_on_disconnect
async def shift(body: ShiftRequest, raw: Request, serve: Serving = Depends(serving)) -> ShiftView:
    """Rank every token of ``answer`` under the base model given ``query`` as plain text (no URIAL
    prefix), with the categories of ``untuned shift``: in context mode the base side of ``untuned shift
    context``; in pair mode ``untuned shift pair``, the aligned model's own probabilities and KL beside."""
    analyzer = await asyncio.to_thread(_analyzer, serve, body)
    item = AnswerItem(id="page", query=body.query, answer=body.answer)
    example = await serve.on_model(analyzer.analyze, item)
    return ShiftView(mode=body.mode, tokens=example.tokens, ratios=example.ratios(), truncated=example.truncated)


def _analyzer(serve: Serving, body: ShiftRequest) -> ShiftAnalyzer:
    """The analysis a request asks for, made once per mode and top-k (the models never change); BadRequest
    naming what is missing (pair mode without --aligned, or an aligned model whose tokenizer is not the base's)."""
    key = (body.mode, body.top_k)
    found = serve.analyzers.get(key)
    if found is not None:
        return found
    base = serve.assistant.backend
    if body.mode == "context":
        found = ShiftAnalyzer(base, mode="text", context="plain", top_k=body.top_k)
    elif serve.aligned is None:
        raise BadRequest("mode 'pair' needs an aligned model: start the server with --aligned MODEL", param="mode")
    else:
        aligned = serve.aligned.backend
        templated = isinstance(aligned, ChatTemplated) and aligned.template_text() is not None
        try:
            found = ShiftAnalyzer(base, mode="pair", aligned=aligned, aligned_template=templated, top_k=body.top_k)
        except UntunedError as exc:
            raise BadRequest(f"mode 'pair': {exc}", param="mode") from exc
    serve.analyzers[key] = found
    return found
