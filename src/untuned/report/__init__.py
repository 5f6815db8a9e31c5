"""Reports over judged answers (``untuned report``): tables, CSV and HTML with plots."""

from untuned.report.render import html, markdown, plots, write_csv
from untuned.report.tables import AspectStat, ModelReport, NaPolicy, PairwiseStat, Report, build_report, load_verdicts, stat

__all__ = [
    "AspectStat",
    "ModelReport",
    "NaPolicy",
    "PairwiseStat",
    "Report",
    "build_report",
    "html",
    "load_verdicts",
    "markdown",
    "plots",
    "stat",
    "write_csv",
]
