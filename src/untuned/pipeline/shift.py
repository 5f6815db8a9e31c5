"""Shift analysis as a step: the answers to analyse made first where asked (greedy, no repetition penalty:
the ranks then measure models, not a sampler), and how far the URIAL prefix moves the base model along a
run's answers (``untuned shift context``, an experiment's ``shift = true``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from untuned.answers import AnswerItem, tags_from_meta
from untuned.assistant import Assistant
from untuned.backends import Backend, OwnTokenizer, Sampling
from untuned.benchmarks import Item
from untuned.conversation import DEFAULT_FORMAT, Conversation, RenderedPrompt
from untuned.prompt import PromptSet
from untuned.shift import ShiftAnalyzer, ShiftSummary, run_shift, write_outputs
from untuned.shift.contexts import ContextKind, aligntds_context, plain_context
from untuned.shift.families import AlignedContext


def shift_answers(
    base: Backend, second: Backend, prompt: PromptSet, items: list[AnswerItem], out: str | Path, *, plots: bool = False
) -> ShiftSummary:
    """The answers ranked under the base without the URIAL prefix against the base with it (its top-1 ranked,
    resumable in ``out``); the summary written there is returned."""
    analyzer = ShiftAnalyzer(base, mode="context", aligned=second, prompt=prompt)
    run = run_shift(analyzer, items, out)
    return write_outputs(run.records, out, analyzer.settings, plots=plots)


SHIFT_SAMPLING = Sampling(temperature=0.0, repetition_penalty=1.0, max_tokens=256)


def generate_answers(
    backend: Backend,
    items: Iterable[Item],
    *,
    context: ContextKind | Literal["chat"],
    prompt: PromptSet,
    sampling: Sampling,
    on_answer: Callable[[AnswerItem], None] | None = None,
    aligned_context: AlignedContext | None = None,
) -> list[AnswerItem]:
    """Answer each item's first turn with ``backend``, shown the query as the analysis will show it
    (``chat``: in the model's own chat template, as an aligned model answers). Shift analysis answers
    greedily with no repetition penalty (SHIFT_SAMPLING) unless told otherwise: its ranks then measure the
    models, not a sampler. With ``aligned_context`` (AlignTDS's protocol) the model reads its family's string
    as its own tokenizer encodes it, and the answer is kept as generated, with the model's end-of-sequence text
    ("</s>") after it where the model ended it (URIAL's result files, which AlignTDS reads, hold it so)."""
    assistant = Assistant(backend, prompt, sampling, check_fits=context == "urial")  # the others never show the set
    answered = []
    for item in items:
        if aligned_context is not None and isinstance(backend, OwnTokenizer):
            rendered = RenderedPrompt(prefix="", body="", ids=tuple(backend.encode_text(aligned_context.text(item.turns[0]))))
            completion = assistant.complete_prompt(rendered, sampling=sampling, clean=False)
            text = completion.text + (backend.end_text() if completion.finish_reason == "stop" else "")
        elif context == "chat":
            text = assistant.complete_chat([{"role": "user", "content": item.turns[0]}], sampling=sampling).text
        elif context == "urial":
            conversation = Conversation(prompt)
            conversation.add_user(item.turns[0])
            text = assistant.complete(conversation).text
        else:
            body = aligntds_context(item.turns[0]) if context == "aligntds" else plain_context(item.turns[0])
            rendered = RenderedPrompt(prefix="", body=body)
            text = assistant.complete_prompt(rendered, sampling=sampling.model_copy(update={"stop": DEFAULT_FORMAT.stop})).text
        answered_item = AnswerItem(
            id=item.id,
            query=item.turns[0],
            answer=text,
            dataset=item.dataset,
            tags=tags_from_meta(item.meta),
            generator=backend.name,
        )
        answered.append(answered_item)
        if on_answer:
            on_answer(answered_item)
    return answered
