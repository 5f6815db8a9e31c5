"""Judging answers: the items a judge mode takes (answers, MT-bench items, and the second answers of a mode
that compares two), read from answer files of any kind, then judged into a resumable verdict file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from untuned.judge import Judge, JudgeCache, JudgeModel, judge_mode
from untuned.judge.verdicts import Verdict
from untuned.pipeline.inputs import ReadOptions, input_kind
from untuned.runner import RunSummary


def judged_items(
    mode: str,
    answers: str | Path,
    *,
    second: str | Path | None = None,
    tags: dict | None = None,
    questions: str | Path | None = None,
    references: str | Path | None = None,
    require_references: bool = True,
) -> tuple[list[Any], dict[str, Any] | None]:
    """The items ``mode`` judges from ``answers`` (and the second answers by id, from ``second``, for a mode
    that compares two), read as the mode's input kind reads them (:mod:`untuned.pipeline.inputs`)."""
    found = judge_mode(mode)
    kind = input_kind(found.takes)
    options = ReadOptions(tags=tags, questions=questions, references=references, require_references=require_references)
    items = kind.read(answers, options)
    if not found.needs_second or second is None:
        return items, None
    return items, {item.id: item for item in kind.read(second, options)}


def judge_answers(
    model: JudgeModel,
    mode: str,
    items: list[Any],
    out: str | Path,
    *,
    second_answers: dict[str, Any] | None = None,
    cache: JudgeCache | None = None,
    parse_retries: int = 2,
    concurrency: int = 1,
    force: bool = False,
    on_start=None,
    on_verdict=None,
) -> RunSummary[Verdict]:
    """Judge ``items`` in ``mode`` into ``out`` (resumable); the judge model stays open (the caller's)."""
    judge = Judge(model, judge_mode(mode), cache, parse_retries=parse_retries)
    return judge.run(
        items,
        out,
        second_answers=second_answers,
        concurrency=concurrency,
        force=force,
        on_start=on_start,
        on_verdict=on_verdict,
    )
