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
        Path | None, typer.Option("--out", "-o", help="The experiment's folder [default: the plan's name].")
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
    table = Table("cell", "items", "generations", "judge requests", "answered", "judged", title=f"{len(rows)} cells")
    for row in rows:
        table.add_row(row["cell"], *(str(row[k]) for k in ("items", "generations", "judge_requests", "answered", "judged")))
    out.print(table)
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
    if files:
        folder = write_report(experiment, files)
        out.print(
            f"report: {folder / 'report.md'}"
            + (f", K curve: {folder / 'k-curve.png'}" if (folder / "k-curve.png").exists() else "")
        )
