"""The report sections judge modes feed, as records: a mode names its section by the object, and the report
asks the section (does it hold per-aspect scores? may N/A count as 5? what is the top of its scale? does it
draw a table of its own?), never the mode's or the section's name.

A plugin's mode of a new shape brings its section with it: a :class:`ReportSection` whose ``rows`` turns that
mode's verdicts into table rows (pydantic records); the report computes them, and Markdown, HTML and CSV show
them as a table titled ``title`` (tests/scripted/untuned_refusals.py does it in one file).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ReportSection:
    """Where a judge mode's verdicts go in a report.

    ``scored``: the verdicts hold scores per aspect (means, paired comparisons and diagnostics are made of
    them); ``na_as_five``: ``report --na five`` counts an N/A score as 5 here (just-eval's rule); ``top``: the
    top score of its scale; ``partial``: a failed verdict's scores still count (MT-bench: a failed turn 2 keeps
    turn 1, as FastChat counts it); ``rows``: a table of the section's own, from its verdicts (None for a built-in
    section, whose tables the report's modules draw)."""

    name: str
    title: str = ""
    scored: bool = False
    na_as_five: bool = False
    top: int = 5
    partial: bool = False
    rows: Callable[[list[Any]], list[Any]] | None = None


JUST_EVAL = ReportSection("just-eval", "Scores per aspect (1-5)", scored=True, na_as_five=True)
MT_BENCH = ReportSection("mt-bench", "MT-bench (FastChat's show_result)", scored=True, top=10, partial=True)
WIN_RATES = ReportSection("win-rates", "Win rates against a baseline")
MT_BENCH_PAIRWISE = ReportSection("mt-bench-pairwise", "MT-bench pairwise (FastChat's rule)")
TAGS = ReportSection("tags", "Query tags")
