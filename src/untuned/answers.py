"""Answers to analyse or judge: the :class:`AnswerItem` record, and answers generated for shift
analysis (answer files are read by :func:`untuned.formats.read_answers`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from untuned.assistant import Assistant
from untuned.backends import Backend, Sampling
from untuned.conversation import DEFAULT_FORMAT, Conversation, RenderedPrompt
from untuned.prompt import PromptSet

if TYPE_CHECKING:
    from untuned.data import Item

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


def tags_from_meta(meta: dict[str, Any]) -> dict[str, list[str]]:
    """The tag fields of an item's metadata, each as a list of labels."""
    tags = {}
    for field in TAG_FIELDS:
        value = meta.get(field)
        if isinstance(value, str) and value:
            tags[field] = [value]
        elif isinstance(value, list) and value:
            tags[field] = [str(v) for v in value]
    return tags


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
        answered_item = AnswerItem(id=item.id, query=item.turns[0], answer=text, dataset=item.dataset,
                                   tags=tags_from_meta(item.meta), generator=backend.name)  # fmt: skip
        answered.append(answered_item)
        if on_answer:
            on_answer(answered_item)
    return answered
