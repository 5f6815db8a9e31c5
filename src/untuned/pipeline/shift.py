"""How far the URIAL prefix moves the base model along a run's answers (``untuned shift context``, and an
experiment's ``shift = true``)."""

from __future__ import annotations

from pathlib import Path

from untuned.answers import AnswerItem
from untuned.backends import Backend
from untuned.prompt import PromptSet
from untuned.shift import ShiftAnalyzer, ShiftSummary, run_shift, write_outputs


def shift_answers(
    base: Backend, second: Backend, prompt: PromptSet, items: list[AnswerItem], out: str | Path, *, plots: bool = False
) -> ShiftSummary:
    """The answers ranked under the base without the URIAL prefix against the base with it (its top-1 ranked,
    resumable in ``out``); the summary written there is returned."""
    analyzer = ShiftAnalyzer(base, mode="context", aligned=second, prompt=prompt)
    run = run_shift(analyzer, items, out)
    return write_outputs(run.records, out, analyzer.settings, plots=plots)
