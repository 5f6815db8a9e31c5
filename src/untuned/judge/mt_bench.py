"""MT-bench single-answer grading: what is judged (:class:`MtBenchItem`), where answers and reference
answers come from (an untuned run, or FastChat's ``model_answer`` / ``reference_answer`` files), and
which categories need a reference.

Each turn is scored 1-10 in its own request; turn 2 is asked with the whole conversation in view,
and only its answer is scored. Math, reasoning and coding questions are judged against a reference
answer, as FastChat's llm_judge does, because a judge grading those alone is too easily fooled by
a confident wrong answer.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from untuned.errors import DataFileError, UntunedError
from untuned.generation import generation_records
from untuned.rows import read_rows

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


def category_of(question_id: str | int) -> str | None:
    """The category of one of MT-bench's 80 questions (ids 81-160), from its id alone."""
    try:
        number = int(question_id)
    except ValueError:
        return None
    if not 81 <= number <= 160:
        return None
    return [name for name, first in CATEGORY_BY_ID_RANGE if number >= first][-1]


def _rows(path: str | Path):

    return read_rows(path)


def _choice_turns(path: str | Path, number: int, row: dict) -> list[str]:
    try:
        turns = row["choices"][0]["turns"]
    except (KeyError, IndexError, TypeError):
        raise DataFileError(path, number, "expected FastChat's choices[0].turns") from None
    if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
        raise DataFileError(path, number, "choices[0].turns must be a list of strings")
    return turns


def read_references(path: str | Path) -> dict[str, list[str]]:
    """Reference answers by question id, from a FastChat ``reference_answer/*.jsonl`` file."""
    return {str(row.get("question_id")): _choice_turns(path, number, row) for number, row in _rows(path)}


def read_questions(path: str | Path) -> dict[str, dict]:
    """MT-bench questions (``question_id``, ``category``, ``turns``) by id."""
    return {str(row.get("question_id")): row for _, row in _rows(path)}


def read_mt_bench_answers(path: str | Path, *, questions: str | Path | None = None) -> list[MtBenchItem]:
    """Answers to MT-bench: an ``untuned generate mt-bench`` run (turns included), or a FastChat
    ``model_answer/*.jsonl`` file, whose turns come from ``questions`` (FastChat's ``question.jsonl``)."""
    rows = list(_rows(path))
    if rows and "choices" in rows[0][1]:
        if questions is None:
            raise UntunedError(f"{path} is a FastChat answer file: pass the questions with --questions")
        known = read_questions(questions)
        items = []
        for number, row in rows:
            qid = str(row.get("question_id"))
            if qid not in known:
                raise DataFileError(path, number, f"question {qid} is not in {questions}")
            question = known[qid]
            items.append(
                MtBenchItem(
                    id=qid,
                    turns=list(question["turns"]),
                    outputs=_choice_turns(path, number, row),
                    category=question.get("category") or category_of(qid),
                    generator=row.get("model_id"),
                )
            )
        return items

    what = "MT-bench answers (neither a run of `untuned generate mt-bench` nor FastChat's model_answer rows)"
    return [
        MtBenchItem(
            id=r.id, turns=r.turns, outputs=r.outputs, category=r.meta.get("category") or category_of(r.id), generator=r.generator
        )
        for r in generation_records(path, rows, what=what)
    ]


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
