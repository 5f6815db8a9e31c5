"""Answers to analyse or judge: read from answer files (ours or other tools'), or generated here."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from untuned.assistant import Assistant
from untuned.backend import Backend, Sampling
from untuned.conversation import DEFAULT_FORMAT, Conversation, RenderedPrompt
from untuned.data import DataFileError, Item, read_rows
from untuned.prompt import PromptSet
from untuned.run import RunRecord, import_answers

TAG_FIELDS = ("task_types", "topics", "difficulty", "category")
ContextKind = Literal["plain", "urial"]


class AnswerItem(BaseModel):
    """A query and an answer to it, with what is known about them."""

    model_config = ConfigDict(extra="forbid")

    id: str
    query: str
    answer: str
    dataset: str | None = None
    tags: dict[str, list[str]] = Field(default_factory=dict, description="task_types, topics, difficulty, category.")
    generator: str | None = None


def plain_context(query: str) -> str:
    """The query as plain text, then a blank line: what an answer follows without URIAL."""
    return f"{query.strip()}\n\n"


def _tags(meta: dict[str, Any]) -> dict[str, list[str]]:
    tags = {}
    for field in TAG_FIELDS:
        value = meta.get(field)
        if isinstance(value, str) and value:
            tags[field] = [value]
        elif isinstance(value, list) and value:
            tags[field] = [str(v) for v in value]
    return tags


def read_tags(path: str | Path) -> dict[str, dict[str, Any]]:
    """Rows of a tagged query file (just-eval's) by id: dataset and tag fields."""
    return {str(row.get("id", number)): row for number, row in read_rows(Path(path))}


def read_answers(path: str | Path, *, tags: dict[str, dict[str, Any]] | None = None) -> list[AnswerItem]:
    """Answers from an `untuned generate` run, just-eval / AlpacaEval output, or any JSONL of
    ``id, instruction, output``; tags and dataset joined by id from ``tags`` where given."""
    rows = list(read_rows(Path(path)))
    if rows and "outputs" in rows[0][1]:
        records = []
        for number, row in rows:
            try:
                records.append(RunRecord.model_validate(row))
            except ValueError as exc:
                raise DataFileError(path, number, f"not a run record: {str(exc).splitlines()[0]}") from exc
    else:
        records = import_answers(path)
    items = []
    for record in records:
        joined = (tags or {}).get(record.id, {})
        meta = {**joined, **record.meta}
        items.append(AnswerItem(id=record.id, query=record.turns[0], answer=record.outputs[0],
                               dataset=record.dataset or joined.get("dataset"), tags=_tags(meta),
                               generator=record.generator))  # fmt: skip
    return items


def generate_answers(
    backend: Backend,
    items: Iterable[Item],
    *,
    context: ContextKind,
    prompt: PromptSet,
    sampling: Sampling,
    on_answer: Callable[[AnswerItem], None] | None = None,
) -> list[AnswerItem]:
    """Answer each item's first turn with ``backend``, shown the query as the analysis will show it."""
    assistant = Assistant(backend, prompt, sampling)
    answered = []
    for item in items:
        if context == "urial":
            conversation = Conversation(prompt)
            conversation.add_user(item.turns[0])
            text = assistant.complete(conversation).text
        else:
            rendered = RenderedPrompt(prefix="", body=plain_context(item.turns[0]))
            text = assistant.complete_prompt(rendered, sampling=sampling.model_copy(update={"stop": DEFAULT_FORMAT.stop})).text
        answered_item = AnswerItem(id=item.id, query=item.turns[0], answer=text, dataset=item.dataset, tags=_tags(item.meta),
                               generator=backend.name)  # fmt: skip
        answered.append(answered_item)
        if on_answer:
            on_answer(answered_item)
    return answered
