"""``untuned experiment PLAN``: a declared grid, generated, judged and reported, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from untuned.cli.common import friendly, out, progress
from untuned.experiment import Experiment, read_plan, write_report


@friendly
def experiment_command(
    plan: Annotated[Path, typer.Argument(help="The plan: a TOML file (see experiments/k-curve.toml).")],
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="The experiment's folder (default: the plan's name).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the cells, the work planned and what exists; run nothing.")
    ] = False,
) -> None:
    """Run a grid of models × prompt sets × datasets through generate → judge → report in one folder.
    Kill it at any moment and rerun the same command: nothing done is done twice."""
    declared = read_plan(plan)
    experiment = Experiment(declared, output or Path(declared.name))
    rows = experiment.describe()
    table = Table(title=f"{len(rows)} cells")
    table.add_column("model / prompt / dataset", overflow="fold")  # a long name wraps, never cut
    for column in ("items", "answers", "verdicts"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        name = f"{row['model']} / {row['prompt']} / {row['dataset']}"
        done = (f"{row['answered']}/{row['generations']}", f"{row['judged']}/{row['judge_requests']}")
        table.add_row(name, str(row["items"]), *done)
    out.print(table)
    judge = declared.judge
    if judge is None or not judge.modes:
        judged_by = "no judge (answers only)"
    elif judge.url:
        name = judge.model or "(the server's first model)"
        judged_by = f"judge {name} at {judge.url}, modes {', '.join(judge.modes)}"
    else:
        judged_by = (
            f"the bundled local judge (SmolLM2-135M-Instruct), modes {', '.join(judge.modes)}: for plumbing only, "
            "far too weak for numbers worth reporting; set [judge] url and model"
        )
    out.print(f"results in {experiment.out.resolve()}/ (cells/, report/); {judged_by}", markup=False)
    out.print(
        f"{sum(r['generations'] for r in rows)} generations and {sum(r['judge_requests'] for r in rows)} judge "
        f"requests planned; {sum(r['answered'] for r in rows)} answers and {sum(r['judged'] for r in rows)} "
        "verdicts exist"
    )
    if dry_run:
        return
    with progress() as bar:
        steps = len(rows) * (1 + len(experiment.plan.judge.modes if experiment.plan.judge else []))
        task = bar.add_task("experiment", total=steps, note="")
        files = experiment.run(on_step=lambda what: bar.update(task, advance=1, note=what))
    if files or experiment.plan.likelihood:
        folder = write_report(experiment, files)
        shown = [("report", "report.md"), ("K curve", "k-curve.png"), ("likelihood", "likelihood.md")]
        out.print(", ".join(f"{what}: {folder / name}" for what, name in shown if (folder / name).exists()))
