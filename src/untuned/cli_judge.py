"""``untuned judge`` and ``untuned report``. Registered on ``untuned.cli.app``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from untuned.answers import read_answers, read_tags
from untuned.cli import _friendly, _progress, app, out
from untuned.errors import UntunedError

MODES = ("multi", "safety", "pairwise", "tag")


def default_cache() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "untuned" / "judge.sqlite"


@app.command("judge")
@_friendly
def judge_command(
    mode: Annotated[str, typer.Argument(help="multi (five aspects), safety, pairwise (two answer files) or tag.")],
    answers: Annotated[list[Path], typer.Argument(help="Answer file(s): an untuned run, just-eval / AlpacaEval output, "
                                                       "or JSONL of id, instruction, output. pairwise: two files.")],
    output: Annotated[Path, typer.Option("--out", "-o", help="JSONL of verdicts; appended to and resumed.")],
    judge_url: Annotated[str | None, typer.Option("--judge-url", help="OpenAI-compatible /v1 URL of the judge.")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="The judge's model name on that server.")] = None,
    judge_gguf: Annotated[Path | None, typer.Option("--judge-gguf", help="A local instruct GGUF as judge "
                                                    "(default without --judge-url: bundled SmolLM2-135M, weak).")] = None,
    api_key_env: Annotated[str, typer.Option("--api-key-env", help="Variable holding the judge's API key.")] = "OPENAI_API_KEY",
    structured: Annotated[bool, typer.Option("--structured", help="Ask the server for JSON-schema output.")] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Requests in flight at once.")] = 4,
    parse_retries: Annotated[int, typer.Option("--parse-retries", min=0, help="Asks again after an unreadable reply.")] = 2,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0, help="Retries on 429 / 5xx / timeouts, with backoff.")] = 6,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds per judge request.")] = 120.0,
    cache: Annotated[Path | None, typer.Option("--cache", help="SQLite reply cache [~/.cache/untuned/judge.sqlite].")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache.")] = False,
    tags: Annotated[Path | None, typer.Option("--tags", help="Tagged queries (just-eval's) joined by id.")] = None,
    category: Annotated[str | None, typer.Option("--category", help="Only items of this category tag (regular, safety).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Judge at most this many items.")] = None,
    ids: Annotated[str | None, typer.Option("--ids", help="Comma-separated ids to judge.")] = None,
) -> None:  # fmt: skip
    """Judge answers with an LLM: 1-5 scores with rationales per aspect, pairwise preferences, or query tags."""
    from untuned.judge import TEMPLATES, JudgeCache, Judging, load_judge

    if mode not in MODES:
        raise UntunedError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if (mode == "pairwise") != (len(answers) == 2) or len(answers) > 2:
        raise UntunedError("pairwise mode takes exactly two answer files; the other modes one")
    joined = read_tags(tags) if tags else None
    items = read_answers(answers[0], tags=joined)
    if category:
        items = [i for i in items if category in i.tags.get("category", [])]
    if ids:
        wanted = {i.strip() for i in ids.split(",")}
        items = [i for i in items if i.id in wanted]
    items = items[:limit]
    others = {i.id: i for i in read_answers(answers[1], tags=joined)} if mode == "pairwise" else None
    judge = load_judge(url=judge_url, model=judge_model, gguf=judge_gguf, api_key_env=api_key_env, timeout=timeout,
                       max_retries=max_retries, structured=structured)  # fmt: skip
    store = None if no_cache else JudgeCache(cache or default_cache())
    judging = Judging(judge, TEMPLATES[mode], store, parse_retries=parse_retries)  # type: ignore[index]
    with _progress() as progress:
        task = progress.add_task("judging", total=None, note="")
        tally = {"scored": 0, "failed": 0, "cached": 0}

        def count(verdict) -> None:
            tally[verdict.status] += 1
            tally["cached"] += verdict.cached
            progress.update(task, advance=1, note=f"{tally['failed']} failed · {tally['cached']} cached")

        summary = judging.run(items, output, others=others, concurrency=concurrency,
                              on_start=lambda n: progress.update(task, total=n), on_verdict=count)  # fmt: skip
    out.print(
        f"{summary.scored} scored, {summary.failed} failed, {summary.skipped} already in {output}; "
        f"{summary.cached} from the cache, {summary.requests} requests in {summary.seconds:.1f} s"
    )
    if summary.failed:
        out.print(f"[yellow]{summary.failed} items failed; their raw replies are in {output}. Rerun to retry them.[/]")


@app.command("report")
@_friendly
def report_command(
    files: Annotated[list[Path], typer.Argument(help="Verdict files of untuned judge, or just-eval judged JSON files.")],
    output: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for report.md, report.csv, report.html.")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Rank the models in a leaderboard.")] = False,
    na: Annotated[str, typer.Option("--na", help="N/A scores: skip (missing) or five (as just-eval counts them).")] = "skip",
    formats: Annotated[str, typer.Option("--formats", help="Comma-separated: md, csv, html.")] = "md,csv,html",
) -> None:
    """Tables of judged answers: means with 95% CIs per aspect and model, breakdowns, pairwise, lengths."""
    from untuned.report import build_report, html, load_verdicts, markdown, write_csv

    if na not in ("skip", "five"):
        raise UntunedError("--na is skip or five")
    wanted = {f.strip() for f in formats.split(",") if f.strip()}
    if wanted - {"md", "csv", "html"}:
        raise UntunedError(f"unknown format(s): {', '.join(sorted(wanted - {'md', 'csv', 'html'}))}")
    verdicts = [v for path in files for v in load_verdicts(path)]
    report = build_report(verdicts, na=na)  # type: ignore[arg-type]
    text = markdown(report, compare=compare)
    out.print(text, markup=False)
    if output is None:
        return
    output.mkdir(parents=True, exist_ok=True)
    if "md" in wanted:
        (output / "report.md").write_text(text, encoding="utf-8")
    if "csv" in wanted:
        write_csv(report, output / "report.csv")
    if "html" in wanted:
        (output / "report.html").write_text(html(report, compare=compare), encoding="utf-8")
    out.print(f"written to {output}/")
