"""Token distribution shift between a base model and an aligned one (``untuned shift``).

>>> from untuned import load_backend
>>> from untuned.answers import read_answers
>>> from untuned.shift import ShiftAnalyzer, run_shift, write_outputs
>>> analyzer = ShiftAnalyzer(load_backend("default"), mode="text")
>>> run = run_shift(analyzer, read_answers("answers.jsonl"), "out/")
>>> summary = write_outputs(run.records, "out/", analyzer.settings)
>>> summary.overall.ratios
"""

from untuned.shift.analyze import ShiftAnalyzer
from untuned.shift.contexts import plain_context, urial_context
from untuned.shift.output import TokenFormat, run_shift, write_html, write_outputs, write_plots, write_tokens
from untuned.shift.records import (
    CATEGORIES,
    ShiftExample,
    ShiftMode,
    ShiftSettings,
    ShiftSummary,
    TokenShift,
    category,
    summarize,
)

__all__ = [
    "CATEGORIES",
    "ShiftAnalyzer",
    "ShiftExample",
    "ShiftMode",
    "ShiftSettings",
    "ShiftSummary",
    "TokenFormat",
    "TokenShift",
    "category",
    "plain_context",
    "run_shift",
    "summarize",
    "urial_context",
    "write_html",
    "write_outputs",
    "write_plots",
    "write_tokens",
]
