"""Token distribution shift between a base model and an aligned one (``untuned shift``).

>>> from untuned import load_backend
>>> from untuned.shift import ShiftAnalyzer, items_from_answers, run_shift, write_outputs
>>> analyzer = ShiftAnalyzer(load_backend("default"), mode="text")
>>> examples = run_shift(analyzer, items_from_answers("answers.jsonl"), "out/")
>>> summary = write_outputs(examples, "out/", analyzer.settings)
>>> summary.overall.ratios
"""

from untuned.shift.analyze import ShiftAnalyzer, ShiftItem, ShiftSettings, plain_context, urial_context
from untuned.shift.items import generate_answers, items_from_answers, read_tags
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
    "items_from_answers",
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
