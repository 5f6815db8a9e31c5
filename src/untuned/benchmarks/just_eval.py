"""JUST-EVAL-INSTRUCT (Re-Align/just-eval): 1000 queries, 800 regular ones tagged with task types, topics and a
difficulty, 200 safety ones; judged on five aspects (and safety), 1-5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from untuned.benchmarks.base import Benchmark, Item, RowReader, text_field
from untuned.rows import as_label_list

TASK_TYPES = ("info-seek", "reasoning", "procedure", "writing", "coding", "role-play", "math")
TOPICS = ("lifestyle", "stem", "humanities", "nature", "finance", "ethics", "medical", "malicious")
DIFFICULTIES = ("easy", "medium", "hard")
TAGS = {"task_types": TASK_TYPES, "topics": TOPICS, "difficulty": DIFFICULTIES}
META = ("dataset", "source_id", "category", "task_types", "topics", "difficulty")  # the row fields an item keeps


def meta(row: dict[str, Any]) -> dict[str, Any]:
    """The just-eval fields of a row that untuned keeps with each item (tag lists as lists)."""
    return {k: as_label_list(row[k]) for k in META if k in row}


def reader(name: str) -> RowReader:
    """Rows of one instruction each (``field``), their just-eval fields kept; the dataset named ``name``
    where a row names none."""

    def read_row(path: Path, number: int, index: int, row: dict[str, Any], field: str, id_field: str) -> Item:
        text = text_field(path, number, row, field)
        return Item(id=str(row.get(id_field, index)), turns=(text,), dataset=row.get("dataset") or name, meta=meta(row))

    return read_row


BENCHMARK = Benchmark(
    name="just-eval",
    description="JUST-EVAL-INSTRUCT: 1000 queries (800 regular, tagged; 200 safety)",
    read_row=reader("just-eval"),
    hub=("re-align/just-eval-instruct", "default", "test"),
    judge_modes=("multi", "safety"),
    tags=TAGS,
    tag_fields=("task_types", "topics", "category"),
    sections=("just-eval", "tags"),
)
