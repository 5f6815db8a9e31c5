"""Reports over judged answers (``untuned report``): tables, CSV and HTML with plots."""

from untuned.report.build import AspectStat, ModelReport, NaPolicy, PairwiseStat, Report, build_report, stat
from untuned.report.markdown import to_markdown
from untuned.report.render import plots, to_html, write_csv

__all__ = [
    "AspectStat",
    "ModelReport",
    "NaPolicy",
    "PairwiseStat",
    "Report",
    "build_report",
    "plots",
    "to_html",
    "to_markdown",
    "stat",
    "write_csv",
]
