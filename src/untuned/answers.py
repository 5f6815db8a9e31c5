"""Answers to analyse or judge: the :class:`AnswerItem` record, and answer files of any kind read into it
(:func:`read_answers`: untuned runs, just-eval / AlpacaEval outputs, any JSONL of id, instruction, output)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from untuned.errors import DataFileError
from untuned.generation import GenerationRecord, generation_records
from untuned.rows import read_rows

if TYPE_CHECKING:
    pass

TAG_FIELDS = ("task_types", "topics", "difficulty", "category")


class AnswerItem(BaseModel):
    """A query and an answer to it, with what is known about them."""

    model_config = ConfigDict(extra="forbid")

    id: str
    query: str
    answer: str
    dataset: str | None = None
    tags: dict[str, list[str]] = Field(default_factory=dict, description="task_types, topics, difficulty, category.")
    generator: str | None = None


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
