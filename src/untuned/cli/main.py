"""The ``untuned`` command line: builds the app from the command modules, one line per command."""

from __future__ import annotations

import typer

from untuned.cli import cache, chat, curve, experiment, judge, plan, pool, report, runs, serve, shift

app = typer.Typer(
    help="Chat with untuned base LLMs through URIAL in-context alignment; measure and judge what alignment changes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("ask")(chat.ask)
app.command("chat")(chat.chat)
app.add_typer(chat.prompts_app, name="prompts")
app.command("backends")(chat.backends)
app.command("plan")(plan.plan_command)
app.add_typer(cache.cache_app, name="cache")
app.add_typer(pool.pool_app, name="pool")
app.command("generate")(runs.generate_command)
app.command("merge")(runs.merge_command)
app.command("export")(runs.export_command)
app.command("import")(runs.import_command)
app.command("serve")(serve.serve_command)
app.command("shift")(shift.shift_command)
app.command("curve")(curve.curve_command)
app.add_typer(judge.judge_app, name="judge")
app.command("report")(report.report_command)
app.command("experiment")(experiment.experiment_command)


def main() -> None:
    app()
