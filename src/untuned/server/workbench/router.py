"""untuned's own endpoints for the chat page (the URIAL workbench): the prompt sets a request may name,
the exact prompt the model sees for a conversation, and the shift of every token of an answer.

Each is one endpoint over the library, so the page, ``untuned ask --show-prompt`` and ``untuned
shift`` agree on every character and number.
"""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from untuned.answers import AnswerItem
from untuned.backends import ChatTemplated, prompt_ids
from untuned.errors import UntunedError
from untuned.pool import Pool
from untuned.prompt import PromptSet
from untuned.server.chat.conversation import build_conversation, chat_messages, plain_prompt, rendered_for
from untuned.server.errors import BadRequest
from untuned.server.serving import Serving, serving
from untuned.server.wire import ERRORS, Message
from untuned.server.workbench.wire import ExampleOut, PromptRequest, PromptSetOut, PromptView, SamplerView, ShiftRequest, Side
from untuned.server.worker import cancel_on_disconnect
from untuned.shift import ShiftAnalyzer, ShiftExample, category
from untuned.shift.analyze import Contexts
from untuned.shift.contexts import token_texts
from untuned.shift.records import TokenShift, ratios

router = APIRouter(prefix="/v1/untuned", tags=["untuned"])


class ShiftView(BaseModel):
    """Each answer position: the aligned side's first choice ranked under the base model with no URIAL prefix
    (the model view, ``untuned shift``'s categories), the answer's own token there, and the sampler view."""

    mode: str
    compared: str = Field(description="What the model view compares, in words.")
    tokens: list[TokenShift] = Field(description="The model view (in pair mode with the aligned model's probabilities and KL).")
    answer_texts: list[str] = Field(description="The answer's own token at each position: what the page shows.")
    ratios: dict[str, float] = Field(description="Share of unshifted, marginal and shifted positions in the model view.")
    sampler: SamplerView
    truncated: bool


@router.get("/prompts", response_model=list[PromptSetOut], responses=ERRORS)
async def prompts(serve: Serving = Depends(serving)) -> list[PromptSetOut]:
    """The prompt sets a request may name (``prompt``), with their system text and examples; the pools of kept
    examples as ``pool:NAME``, as they are now."""
    active = serve.assistant.prompt.name
    kept = await run_in_threadpool(_pool_sets)
    return [
        PromptSetOut(
            name=p.name,
            description=p.description,
            system=p.system,
            active=p.name == active,
            examples=[ExampleOut(query=e.query, answer=e.answer) for e in p.examples],
        )
        for p in sorted(serve.prompts.values(), key=lambda p: (p.name != active, p.name))
    ] + [
        PromptSetOut(
            name=f"pool:{p.name}",
            description=p.description,
            system=p.system,
            active=False,
            examples=[ExampleOut(query=e.query, answer=e.answer) for e in p.examples],
        )
        for p in kept
    ]


def _pool_sets() -> list[PromptSet]:
    """Every pool of kept examples as a prompt set (an empty pool has none)."""
    pool = Pool()
    try:
        return [pool.prompt_set(name) for name, count in pool.pools() if count]
    finally:
        pool.close()


@router.post("/prompt", response_model=PromptView, responses=ERRORS)
async def prompt(body: PromptRequest, serve: Serving = Depends(serving)) -> PromptView:
    """The exact prompt the model sees for ``messages`` (the last one the user's), and its size."""
    rendered = await rendered_for(serve, body.messages, body.prompt, body.prompt_set)
    backend = serve.assistant.backend

    def count() -> tuple[int, int]:
        ids = prompt_ids(backend, rendered)
        return len(ids), len(backend.tokenize(rendered.prefix, add_special=True)) if rendered.prefix else 0

    total, prefix = await serve.off_loop(count)
    name = body.prompt_set.name if body.prompt_set else (body.prompt or serve.assistant.prompt.name)
    return PromptView(
        prompt=name, text=rendered.text, prompt_tokens=total, prefix_tokens=prefix, context_length=backend.context_length
    )


@router.post("/shift", response_model=ShiftView, responses=ERRORS)
@cancel_on_disconnect
async def shift(body: ShiftRequest, raw: Request, serve: Serving = Depends(serving)) -> ShiftView:
    """Rank, at every position of ``answer``, the aligned side's first choice under the base model given the
    conversation as plain text (no URIAL prefix): in context mode the aligned side is the base with the URIAL
    prefix (``untuned shift context``), in pair mode the --aligned model in its chat template (``untuned shift
    pair``). Beside it the sampler view: the answer's own tokens ranked where they were drawn from."""
    side: Side = body.sampled_from or ("aligned" if body.mode == "pair" else "urial")
    messages = _messages(body)
    analyzer, contexts, compared = await serve.off_loop(_prepared, serve, body, messages, side)

    def run() -> tuple[ShiftExample, list[str]]:
        example = analyzer.analyze(AnswerItem(id="page", query=messages[-1].text, answer=body.answer), contexts=contexts)
        own = [t.answer_id if t.answer_id is not None else t.id for t in example.tokens if not t.end]
        return example, token_texts(analyzer.base.detokenize, own)

    example, texts = await serve.on_model(run)
    ranks = [t.answer_rank_under("base" if side == "none" else "aligned") for t in example.tokens]
    categories = [category(r) if r is not None else None for r in ranks]
    sampler = SamplerView(
        sampled_from=side,
        ranks=ranks,
        categories=categories,
        ratios=ratios(Counter(c for c in categories if c)),
        off_first_choice=sum(r is not None and r > 1 for r in ranks),
    )
    return ShiftView(
        mode=body.mode,
        compared=compared,
        tokens=example.tokens,
        answer_texts=texts,
        ratios=example.ratios(),
        sampler=sampler,
        truncated=example.truncated,
    )


def _messages(body: ShiftRequest) -> list[Message]:
    if (body.query is None) == (body.messages is None):
        raise BadRequest("give the question as query, or the conversation as messages (one of the two)", param="messages")
    return body.messages or [Message(role="user", content=body.query)]


def _prepared(serve: Serving, body: ShiftRequest, messages: list[Message], side: Side) -> tuple[ShiftAnalyzer, Contexts, str]:
    """The analysis a request asks for, the ids each side reads, and what it compares in words; BadRequest
    naming what does not fit (pair mode without --aligned, or with a tokenizer not the base's; a side the
    mode has not; context mode with no prompt set)."""
    base = serve.assistant.backend
    base_ids = prompt_ids(base, plain_prompt(messages))
    question = "the question" if len(messages) == 1 else "the conversation"
    if body.mode == "context":
        if side == "aligned":
            raise BadRequest("sampled_from 'aligned' needs mode 'pair' (an --aligned model's answer)", param="sampled_from")
        chosen = serve.prompt_set(body.prompt, body.prompt_set)  # (on the prep threads already)
        chosen = serve.assistant.fitted(chosen) if chosen is not None else None
        if chosen is None:
            raise BadRequest("context mode compares with a URIAL prompt set: prompt 'none' has none", param="prompt")
        rendered = build_conversation(serve.assistant, messages, serve.config.system_mode, prompt=chosen).render()
        analyzer = ShiftAnalyzer(base, mode="context", aligned=base, prompt=chosen, top_k=body.top_k, texts=serve.token_texts)
        compared = f"the base model's {_ranked(analyzer)} with the URIAL prefix ({chosen.name}), ranked without it"
        return analyzer, (base_ids, prompt_ids(base, rendered)), _in_words(analyzer, compared, question)
    if side == "urial":
        raise BadRequest("sampled_from 'urial' needs mode 'context' (pair mode: the --aligned model)", param="sampled_from")
    if body.prompt is not None or body.prompt_set is not None:
        raise BadRequest("pair mode: the aligned model reads its own chat template, not a prompt set", param="prompt")
    analyzer = _pair_analyzer(serve, body.top_k)
    aligned = analyzer.aligned
    if analyzer.aligned_template:
        aligned_ids = aligned.tokenize_prompt(aligned.chat_prompt(chat_messages(messages)))
    else:
        aligned_ids = prompt_ids(aligned, plain_prompt(messages))
    shown = "its chat template" if analyzer.aligned_template else "plain text"
    compared = f"{aligned.name}'s {_ranked(analyzer)} ({shown}) ranked under the base model's distribution without a URIAL prefix"
    return analyzer, (base_ids, aligned_ids), _in_words(analyzer, compared, question)


def _ranked(analyzer: ShiftAnalyzer) -> str:
    return "first choice" if analyzer.ranked == "aligned-top1" else "answer token"


def _in_words(analyzer: ShiftAnalyzer, compared: str, question: str) -> str:
    if analyzer.ranked == "answer":  # a server's top-k cannot rank a first choice outside the base's top-k
        return f"{compared}, {question} as plain text; the model serves only its top-k, so the sampler's choices are in the ranks"
    return f"{compared}, {question} as plain text; no sampler in the ranks"


def _pair_analyzer(serve: Serving, top_k: int) -> ShiftAnalyzer:
    """Pair mode's analysis, made once per top-k (the models never change; the tokenizers are compared once)."""
    found = serve.analyzers.get(("pair", top_k))
    if found is not None:
        return found
    if serve.aligned is None:
        raise BadRequest("mode 'pair' needs an aligned model: start the server with --aligned MODEL", param="mode")
    aligned = serve.aligned.backend
    templated = isinstance(aligned, ChatTemplated) and aligned.template_text() is not None
    try:
        base, texts = serve.assistant.backend, serve.token_texts
        found = ShiftAnalyzer(base, mode="pair", aligned=aligned, aligned_template=templated, top_k=top_k, texts=texts)
    except UntunedError as exc:
        raise BadRequest(f"mode 'pair': {exc}", param="mode") from exc
    serve.analyzers[("pair", top_k)] = found
    return found
