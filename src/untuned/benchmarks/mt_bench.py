"""MT-bench (FastChat's llm_judge): 80 two-turn questions in eight categories, ten each; answered with
FastChat's per-category temperatures, graded 1-10 per turn (math, reasoning and coding against a
reference answer), or compared pairwise under FastChat's rule.

Each turn is scored in its own request; turn 2 is asked with the whole conversation in view, and only
its answer is scored. A judge grading math, reasoning or coding alone is too easily fooled by a
confident wrong answer, so those need a reference, as in FastChat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from untuned.benchmarks.base import Benchmark, Item
from untuned.errors import DataFileError, UntunedError

# FastChat's temperatures for MT-bench answers, by category: sampled for writing and role-play, near-greedy
# for knowledge questions, greedy where there is one right answer.
TEMPERATURES = {
    "writing": 0.7,
    "roleplay": 0.7,
    "stem": 0.1,
    "humanities": 0.1,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
}
NEEDS_REFERENCE = ("math", "reasoning", "coding")
# MT-bench's 80 questions, ten per category, by id: what FastChat's judgment files leave out.
CATEGORY_BY_ID_RANGE = (
    ("writing", 81),
    ("roleplay", 91),
    ("reasoning", 101),
    ("math", 111),
    ("coding", 121),
    ("extraction", 131),
    ("stem", 141),
    ("humanities", 151),
)


def category_of(question_id: str | int) -> str | None:
    """The category of one of MT-bench's 80 questions (ids 81-160), from its id alone."""
    try:
        number = int(question_id)
    except ValueError:
        return None
    if not 81 <= number <= 160:
        return None
    return [name for name, first in CATEGORY_BY_ID_RANGE if number >= first][-1]


class MtBenchItem(BaseModel):
    """One answered MT-bench question: its turns, the model's answers, and the reference where one is needed."""

    model_config = ConfigDict(extra="forbid")

    id: str
    turns: list[str]
    outputs: list[str]
    category: str | None = None
    generator: str | None = None
    reference: list[str] = Field(default_factory=list)

    @property
    def needs_reference(self) -> bool:
        return self.category in NEEDS_REFERENCE


def attach_references(
    items: list[MtBenchItem], references: dict[str, list[str]] | None, *, required: bool = True
) -> list[MtBenchItem]:
    """Give each math / reasoning / coding item its reference answer. Missing references are an
    error naming the questions, unless ``required`` is false (they are then judged without one)."""
    references = references or {}
    missing = [item.id for item in items if item.needs_reference and item.id not in references]
    if missing and required:
        shown = ", ".join(missing[:8]) + (" …" if len(missing) > 8 else "")
        raise UntunedError(
            f"{len(missing)} math/reasoning/coding questions have no reference answer ({shown}). Pass --references "
            "(FastChat's reference_answer/gpt-4.jsonl format), or --no-references to judge them without one."
        )
    return [
        item.model_copy(update={"reference": references[item.id]}) if item.needs_reference and item.id in references else item
        for item in items
    ]


def read_row(path: Path, number: int, index: int, row: dict[str, Any], field: str, id_field: str) -> Item:
    turns = row.get("turns")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
        raise DataFileError(path, number, "field 'turns' must be a list of non-empty strings")
    qid = str(row.get("question_id", index))
    return Item(id=qid, turns=tuple(turns), dataset="mt-bench", meta={"category": row.get("category") or category_of(qid)})


BENCHMARK = Benchmark(
    name="mt-bench",
    description="MT-bench: 80 two-turn questions in 8 categories (FastChat's question.jsonl)",
    read_row=read_row,
    temperature_by_category=TEMPERATURES,
    judge_modes=("mt-bench",),
    tags={"category": tuple(name for name, _ in CATEGORY_BY_ID_RANGE)},
    tag_fields=("category",),
    sections=("mt-bench",),
    turns=2,
)
