"""``untuned judge``: judging with an LLM judge. JUST-EVAL's aspects (``multi``, ``safety``), query
tags, pairwise preferences and win rates against a baseline, MT-bench grading, and calibration of
a judge against published GPT-4 verdicts. Every command shares the judge options (declared once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from untuned.answers import read_answers, read_tags
from untuned.cli.common import friendly, ids_option, option_group, out, progress
from untuned.data import select
from untuned.errors import UntunedError
from untuned.interop.just_eval import read_just_eval_judged
from untuned.judge import JudgeCache, JudgeModel, VerdictFile, load_judge_model, modes
from untuned.judge.calibration import PUBLISHED, agreements, as_items, fetch_published, sample_published
from untuned.paths import cache_dir
from untuned.pipeline import judge_answers, judged_items
from untuned.pipeline.inputs import input_kind

judge_app = typer.Typer(
    help="Judge answers with an LLM: JUST-EVAL aspects, safety, tags, pairwise win rates, MT-bench, "
    "and calibration against published GPT-4 verdicts.",
    no_args_is_help=True,
)


def default_cache_dir() -> Path:
    return cache_dir()


@dataclass
class JudgeOptions:
    """Which judge, how to reach it, and how the run goes: shared by every ``judge`` command."""

    judge_url: str | None = None
    judge_model: str | None = None
    judge_gguf: Path | None = None
    api_key_env: str = "OPENAI_API_KEY"
    structured: bool = False
    concurrency: int = 4
    parse_retries: int = 2
    max_retries: int = 6
    timeout: float = 120.0
    cache: Path | None = None
    no_cache: bool = False
    force: bool = False

    def model(self) -> JudgeModel:
        return load_judge_model(
            url=self.judge_url,
            model=self.judge_model,
            gguf=self.judge_gguf,
            api_key_env=self.api_key_env,
            timeout=self.timeout,
            max_retries=self.max_retries,
            structured=self.structured,
            parallel=self.concurrency,
        )

    def run(self, mode: str, items: list[Any], output: Path, second_answers: dict | None = None) -> None:
        """Judge ``items`` into ``output`` through the pipeline's judge step (the one ``experiment`` takes) with a
        progress bar, then say what happened."""
        model = self.model()
        store = None if self.no_cache else JudgeCache(self.cache or default_cache_dir() / "judge.sqlite")
        try:
            with progress() as bar:
                task = bar.add_task(f"judging ({mode})", total=None, note="")
                tally = {"scored": 0, "failed": 0, "cached": 0}
                first_error: list[str] = []

                def count(verdict) -> None:
                    tally[verdict.status] += 1
                    if verdict.status == "failed" and not first_error:
                        first_error.append(verdict.error or "")
                    tally["cached"] += verdict.cached
                    bar.update(task, advance=1, note=f"{tally['failed']} failed · {tally['cached']} cached")

                summary = judge_answers(
                    model,
                    mode,
                    items,
                    output,
                    second_answers=second_answers,
                    cache=store,
                    parse_retries=self.parse_retries,
                    concurrency=self.concurrency,
                    force=self.force,
                    on_start=lambda n: bar.update(task, total=n),
                    on_verdict=count,
                )
        finally:
            model.close()
        out.print(
            f"{summary.done} scored, {summary.failed} failed, {summary.skipped} already in {output}; "
            f"{summary.counts['cached']} from the cache, {summary.counts['requests']} requests in {summary.seconds:.1f} s"
        )
        if summary.counts["no_second_answer"]:
            out.print(f"[yellow]{summary.counts['no_second_answer']} items have no second answer and were left out.[/]")
        if summary.failed:
            out.print(
                f"[yellow]{summary.failed} items failed; their errors and raw replies are in {output}. Rerun to retry them.[/]"
            )
            if first_error:
                out.print(f"[yellow]first error: {escape(first_error[0])}[/]", highlight=False)


_JUDGE_OPTIONS: dict[str, tuple[Any, Any]] = {
    "judge_url": (str | None, typer.Option("--judge-url", help="OpenAI-compatible /v1 URL of the judge.")),
    "judge_model": (str | None, typer.Option("--judge-model", help="The judge's model name on that server.")),
    "judge_gguf": (
        Path | None,
        typer.Option(
            "--judge-gguf",
            help="A local instruct GGUF as judge (default without "
            "--judge-url: bundled SmolLM2-135M, weak: for trying the plumbing).",
        ),
    ),
    "api_key_env": (str, typer.Option("--api-key-env", help="Variable holding the judge's API key.")),
    "structured": (bool, typer.Option("--structured", help="Ask the server for JSON-schema output.")),
    "concurrency": (
        int,
        typer.Option(
            "--concurrency",
            "-c",
            min=1,
            help="Items judged side by side: requests at once to a server, or decoded in one batch by a local judge.",
        ),
    ),
    "parse_retries": (int, typer.Option("--parse-retries", min=0, help="Asks again after an unreadable reply.")),
    "max_retries": (int, typer.Option("--max-retries", min=0, help="Retries on 429 / 5xx / timeouts, with backoff.")),
    "timeout": (float, typer.Option("--timeout", min=1.0, help="Seconds per judge request.")),
    "cache": (Path | None, typer.Option("--cache", help="SQLite reply cache (~/.cache/untuned/judge.sqlite).")),
    "no_cache": (bool, typer.Option("--no-cache", help="Neither read nor write the cache.")),
    "force": (bool, typer.Option("--force", help="Set aside a verdict file made by another judge or template.")),
}


def judge_options(command):
    return option_group(JudgeOptions, _JUDGE_OPTIONS)(command)


OutOption = Annotated[Path, typer.Option("--out", "-o", help="JSONL of verdicts; appended to and resumed.")]
Questions = Annotated[
    Path | None,
    typer.Option("--questions", help="MT-bench questions (FastChat's question.jsonl), for FastChat answer files."),
]
AnswersArgument = Annotated[
    Path, typer.Argument(help="Answers: an untuned run, just-eval / AlpacaEval output, or JSONL of id, instruction, output.")
]


@dataclass
class Selection:
    """Which of the answers a judge command takes, and the tags joined to them."""

    tags: Path | None = None
    category: str | None = None
    limit: int | None = None
    ids: str | None = None

    def tags_by_id(self) -> dict | None:
        return read_tags(self.tags) if self.tags else None

    def apply(self, items: list) -> list:
        if self.category:
            items = [i for i in items if self.category in i.tags.get("category", [])]
        return select(items, ids=ids_option(self.ids), limit=self.limit, where="the answers")


_SELECTION: dict[str, tuple[Any, Any]] = {
    "tags": (Path | None, typer.Option("--tags", help="Tagged queries (just-eval's) joined by id.")),
    "category": (str | None, typer.Option("--category", help="Only items of this category tag (regular, safety).")),
    "limit": (int | None, typer.Option("--limit", min=1, help="Judge at most this many items.")),
    "ids": (str | None, typer.Option("--ids", help="Comma-separated ids to judge.")),
}


def selection_options(*names: str):
    """Give a command the answer-selection options ``names`` (default: all), as one ``selection``."""
    return option_group(Selection, _SELECTION, *names, into="selection")


def _single(mode: str, summary: str):
    @friendly
    @judge_options
    @selection_options()
    def command(answers: AnswersArgument, output: OutOption, *, options: JudgeOptions, selection: Selection) -> None:
        items = read_answers(answers, tags=selection.tags_by_id())
        options.run(mode, selection.apply(items), output)

    command.__doc__ = summary
    command.__name__ = f"judge_{mode}"
    return command


for _name, _mode in modes().items():  # every mode that judges one answer file gets its command (plugins' too)
    if input_kind(_mode.takes).one_file and not _mode.needs_second:
        judge_app.command(_name)(_single(_name, _mode.summary or f"Judge each answer in the {_name} mode."))


@judge_app.command("pairwise")
@friendly
@judge_options
@selection_options()
def pairwise_command(
    answers: Annotated[Path, typer.Argument(help="The model's answers (A).")],
    output: OutOption,
    other: Annotated[Path | None, typer.Argument(help="The other model's answers (B); or use --baseline.")] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline", help="Reference answers to win against (AlpacaEval style: a win rate of A against them in the report)."
        ),
    ] = None,
    *,
    options: JudgeOptions,
    selection: Selection,
) -> None:
    """Compare two models' answers, or a model's against a baseline (win rates).

    Each item is judged per aspect and overall, asked in both orders: position bias cancels; a win
    each way is a tie, a win and a tie a win (preference 1.75), as the win rate counts them.
    The overall preference gives AlpacaEval's win rate in the report."""
    if (other is None) == (baseline is None):
        raise UntunedError("pairwise takes the other answers as a second file or as --baseline FILE (one of them)")
    items, second_answers = judged_items("pairwise", answers, second=other or baseline, tags=selection.tags_by_id())
    # items without a second answer: left out, with a warning
    options.run("pairwise", selection.apply(items), output, second_answers=second_answers)


@judge_app.command("mt-bench")
@friendly
@judge_options
@selection_options("limit", "ids")
def mt_bench_command(
    answers: Annotated[
        Path,
        typer.Argument(
            help="MT-bench answers: an untuned generate mt-bench run, or FastChat's model_answer/*.jsonl (with --questions)."
        ),
    ],
    output: OutOption,
    references: Annotated[
        Path | None,
        typer.Option(
            "--references", help="Reference answers for math, reasoning and coding (FastChat's reference_answer/gpt-4.jsonl)."
        ),
    ] = None,
    no_references: Annotated[
        bool,
        typer.Option(
            "--no-references", help="Judge math, reasoning and coding without a reference (FastChat never does; scores run high)."
        ),
    ] = False,
    questions: Questions = None,
    *,
    options: JudgeOptions,
    selection: Selection,
) -> None:
    """Grade MT-bench answers 1-10 per turn, with a rationale.

    Turn 2 is judged with the whole conversation in view; math, reasoning and coding against a
    reference answer (--references)."""
    items, _ = judged_items("mt-bench", answers, questions=questions, references=references, require_references=not no_references)
    options.run("mt-bench", selection.apply(items), output)


@judge_app.command("mt-bench-pair")
@friendly
@judge_options
@selection_options("limit", "ids")
def mt_bench_pair_command(
    answers: Annotated[
        Path, typer.Argument(help="One model's MT-bench answers (A): an untuned run or FastChat's model_answer file.")
    ],
    other: Annotated[Path, typer.Argument(help="The other model's MT-bench answers (B).")],
    output: OutOption,
    questions: Questions = None,
    *,
    options: JudgeOptions,
    selection: Selection,
) -> None:
    """Compare two models' MT-bench answers turn by turn, each turn asked in both orders.

    The report counts them as FastChat's show_result does: a win only when both orders agree, else a tie."""
    items, second = judged_items("mt-bench-pair", answers, second=other, questions=questions, require_references=False)
    options.run("mt-bench-pair", selection.apply(items), output, second_answers=second)


@judge_app.command("calibrate")
@friendly
@judge_options
def calibrate_command(
    output: OutOption,
    published: Annotated[
        str,
        typer.Option(
            "--published",
            help="just-eval judged file (path or URL) whose GPT-4 "
            "verdicts to compare with; by default GPT-4-turbo's on gpt-3.5-turbo's "
            "answers, downloaded once.",
        ),
    ] = PUBLISHED,
    sample: Annotated[int, typer.Option("--sample", min=1, help="Published items to judge again.")] = 30,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample.")] = 0,
    *,
    options: JudgeOptions,
) -> None:
    """Measure a judge against GPT-4's published just-eval verdicts before trusting it.

    Judges a sample of answers GPT-4 already judged, then shows per aspect the Spearman correlation,
    exact and within-one agreement and quadratically weighted kappa with the published scores."""
    path = fetch_published(published, default_cache_dir() / "published")
    chosen = sample_published(read_just_eval_judged(path), sample=sample, seed=seed)
    mode = chosen[0].mode
    options.run(mode, as_items(chosen), output)
    ours = {v.id: v for v in VerdictFile(output).latest().values() if v.mode == mode}
    result = agreements(ours, chosen)
    table = Table(title=f"{result.judge} against {result.published_judge} on {result.items} published items")
    for column in ("aspect", "n", "Spearman", "exact", "within one", "weighted kappa"):
        table.add_column(column, justify="left" if column == "aspect" else "right")
    for a in result.agreements:
        table.add_row(
            a.aspect,
            str(a.n),
            "–" if a.spearman is None else f"{a.spearman:+.2f}",
            f"{a.exact:.0%}",
            f"{a.within_one:.0%}",
            "–" if a.weighted_kappa is None else f"{a.weighted_kappa:+.2f}",
        )
    out.print(table)
    if any(a.spearman is None for a in result.agreements):
        out.print("[yellow]– : one side gave every item the same score, so no correlation can be computed.[/]")
