"""``untuned report``: tables, CSV and HTML over judged answers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from untuned.cli.common import friendly, out
from untuned.errors import UntunedError
from untuned.interop import load_verdicts
from untuned.report import NaPolicy, build_report, to_html, to_markdown, write_csv
from untuned.report.alpaca_eval import read_df_gamed

ReportFormat = Literal["md", "csv", "html"]


@friendly
def report_command(
    files: Annotated[list[Path], typer.Argument(help="Verdict files of untuned judge, or just-eval judged JSON files.")],
    output: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for report.md, report.csv, report.html.")] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Rank the models in a leaderboard, and compare every two "
            "models judged on the same items, per aspect: paired bootstrap interval "
            "and p of the mean difference, Holm-corrected (Wilcoxon p beside it). With "
            "more than two models the terminal gets a compact matrix; report.md the "
            "tables.",
        ),
    ] = False,
    difficulty: Annotated[
        Path | None,
        typer.Option(
            "--difficulty",
            help="AlpacaEval's own df_gamed.csv (Hugging Face "
            "dataset tatsu-lab/alpaca_eval) for its length-controlled win rate, in "
            "place of the difficulty and gamed-baseline rows untuned ships.",
        ),
    ] = None,
    na: Annotated[NaPolicy, typer.Option("--na", help="N/A scores: skip (missing) or five (as just-eval counts them).")] = "skip",
    formats: Annotated[str, typer.Option("--formats", help="Comma-separated: md, csv, html.")] = "md,csv,html",
) -> None:
    """Tables of judged answers: means with 95% CIs per aspect and model, breakdowns, pairwise, MT-bench,
    win rates against a baseline (with a length-controlled one), paired comparisons and judge diagnostics.

    Reads untuned verdict files, just-eval's judged files, AlpacaEval's annotations.json and FastChat's
    MT-bench model_judgment/*_single.jsonl, so published judgments can sit beside ours."""
    wanted = {f.strip() for f in formats.split(",") if f.strip()}
    unknown = wanted - set(ReportFormat.__args__)
    if unknown:
        raise UntunedError(f"unknown format(s): {', '.join(sorted(unknown))}; choose among md, csv, html")
    verdicts = [v for path in files for v in load_verdicts(path)]
    if not any(v.status == "scored" for v in verdicts):
        failed = [v for v in verdicts if v.status == "failed"]
        why = f": {len(failed)} failed (first error: {failed[0].error}); rerun the judge to retry them" if failed else ""
        raise UntunedError(f"nothing to report: no scored verdicts in {', '.join(map(str, files))}{why}")
    report = build_report(verdicts, na=na, compare=compare, difficulty=read_df_gamed(difficulty) if difficulty else None)
    text = to_markdown(report, compare=compare)
    out.print(to_markdown(report, compare=compare, compact=True), markup=False)
    if output is None:
        return
    output.mkdir(parents=True, exist_ok=True)
    if "md" in wanted:
        (output / "report.md").write_text(text, encoding="utf-8")
    if "csv" in wanted:
        write_csv(report, output / "report.csv")  # and report-evaluation.csv for the evaluation sections
    if "html" in wanted:
        (output / "report.html").write_text(to_html(report, compare=compare), encoding="utf-8")
    out.print(f"written to {output}/")
