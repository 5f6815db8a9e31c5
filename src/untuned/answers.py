"""Answers to analyse or judge: the :class:`AnswerItem` record, answer files of any kind read into it
(:func:`read_answers`: untuned runs, just-eval / AlpacaEval outputs, any JSONL of id, instruction,
output), and answers generated for shift analysis."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from untuned.assistant import Assistant
from untuned.backends import Backend, Sampling
from untuned.conversation import DEFAULT_FORMAT, Conversation, RenderedPrompt
from untuned.errors import DataFileError
from untuned.generation import GenerationRecord, generation_records
from untuned.prompt import PromptSet
from untuned.rows import read_rows

if TYPE_CHECKING:
    from untuned.data import Item

TAG_FIELDS = ("task_types", "topics", "difficulty", "category")
ContextKind = Literal["plain", "urial", "aligntds"]
# The base model's context in the paper's analysis (Re-Align/AlignTDS, src/logit_analysis.py with
# --enable_template), character for character: the query in a fenced block, the answer's fence opened.
ALIGNTDS_CONTEXT = "# Query: \n ```{query}``` \n\n \n# Answer: \n ```"
# Texts that mark the end of an answer in other tools' files (a generated "</s>" kept as text): the end is
# scored as the end position, never as the ordinary tokens these texts would tokenize into.
END_MARKERS = ("</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<eos>")


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
    """The query as plain text, then a blank line: what an answer follows without URIAL (untuned's)."""
    return f"{query.strip()}\n\n"


def aligntds_context(query: str) -> str:
    """The paper's analysis' base context for ``query`` (ALIGNTDS_CONTEXT; the query as it is, not stripped)."""
    return ALIGNTDS_CONTEXT.format(query=query)


def without_end_marker(answer: str) -> tuple[str, bool]:
    """The answer without a trailing end marker (END_MARKERS), and whether it had one."""
    stripped = answer.rstrip()
    for marker in END_MARKERS:
        if stripped.endswith(marker):
            return stripped[: -len(marker)], True
    return answer, False


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


SHIFT_SAMPLING = Sampling(temperature=0.0, repetition_penalty=1.0, max_tokens=256)


def generate_answers(
    backend: Backend,
    items: Iterable[Item],
    *,
    context: ContextKind | Literal["chat"],
    prompt: PromptSet,
    sampling: Sampling,
    on_answer: Callable[[AnswerItem], None] | None = None,
) -> list[AnswerItem]:
    """Answer each item's first turn with ``backend``, shown the query as the analysis will show it
    (``chat``: in the model's own chat template, as an aligned model answers). Shift analysis answers
    greedily with no repetition penalty (SHIFT_SAMPLING) unless told otherwise: its ranks then measure the
    models, not a sampler."""
    assistant = Assistant(backend, prompt, sampling)
    answered = []
    for item in items:
        if context == "chat":
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


# --- answer files -------------------------------------------------------------------------------


def import_answers(path: str | Path, *, generator: str | None = None) -> list[GenerationRecord]:
    """Another tool's answers (just-eval or AlpacaEval files, any JSON/JSONL of ``id, instruction, output``)
    as generation records."""
    name = generator or Path(path).stem
    records = []
    for number, row in read_rows(path):
        if not isinstance(row.get("output"), str) or not isinstance(row.get("instruction"), str):
            raise DataFileError(path, number, "fields 'instruction' and 'output' must be strings")
        records.append(
            GenerationRecord(
                id=str(row.get("id", len(records))),
                dataset=row.get("dataset"),
                turns=[row["instruction"]],
                outputs=[row["output"]],
                generator=generator or row.get("generator") or name,
                model=f"imported:{name}",
                prompt_name="",
                prompt_hash="",
                sampling={},
                prompt_tokens=[None],
                completion_tokens=[0],
                finish_reasons=["stop"],
                seconds=0.0,
            )
        )
    return records


def read_tags(path: str | Path) -> dict[str, dict[str, Any]]:
    """Rows of a tagged query file (just-eval's) by id: dataset and tag fields."""
    return {str(row.get("id", number)): row for number, row in read_rows(path)}


def read_answers(path: str | Path, *, tags: dict[str, dict[str, Any]] | None = None) -> list[AnswerItem]:
    """Answers from an ``untuned generate`` run, just-eval / AlpacaEval output, or any JSONL of
    ``id, instruction, output``; tags and dataset joined by id from ``tags`` where given."""
    rows = list(read_rows(path))
    records = generation_records(path, rows) if rows and "outputs" in rows[0][1] else import_answers(path)
    items = []
    for record in records:
        joined = (tags or {}).get(record.id, {})
        meta = {**joined, **record.meta}
        items.append(
            AnswerItem(
                id=record.id,
                query=record.turns[0],
                answer=record.outputs[0],
                dataset=record.dataset or joined.get("dataset"),
                tags=tags_from_meta(meta),
                generator=record.generator,
            )
        )
    return items
