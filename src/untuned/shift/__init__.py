"""Token distribution shift between a base model and an aligned one (``untuned shift``).

>>> from untuned import load_backend
>>> from untuned.shift import ShiftAnalyzer, read_answers, run_shift, write_outputs
>>> analyzer = ShiftAnalyzer(load_backend("default"), mode="text")
>>> examples = run_shift(analyzer, read_answers("answers.jsonl"), "out/")
>>> summary = write_outputs(examples, "out/", analyzer.settings)
>>> summary.overall.ratios
"""

from untuned.answers import generate_answers, plain_context, read_answers, read_tags
from untuned.shift.analyze import ShiftAnalyzer, ShiftItem, ShiftSettings, urial_context
from untuned.shift.output import run_shift, write_html, write_outputs, write_plots, write_tokens
from untuned.shift.records import CATEGORIES, ShiftExample, ShiftSummary, TokenShift, category, summarize

__all__ = [
    "CATEGORIES",
    "ShiftAnalyzer",
    "ShiftExample",
    "ShiftItem",
    "ShiftSettings",
    "ShiftSummary",
    "TokenShift",
    "category",
    "generate_answers",
    "read_answers",
    "plain_context",
    "read_tags",
    "run_shift",
    "summarize",
    "urial_context",
    "write_html",
    "write_outputs",
    "write_plots",
    "write_tokens",
]
