"""``untuned judge``: JUST-EVAL-style judging with an LLM judge."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from untuned.cli.common import friendly, ids_option, out, progress
from untuned.errors import UntunedError
from untuned.formats import read_answers, read_tags
from untuned.judge import TEMPLATES, Judge, JudgeCache, JudgeMode, load_judge_model


def default_cache() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "untuned" / "judge.sqlite"


@friendly
def judge_command(
    mode: Annotated[JudgeMode, typer.Argument(help="multi (five aspects), safety, pairwise (two answer files) or tag.")],
    answers: Annotated[list[Path], typer.Argument(help="Answer file(s): an untuned run, just-eval / AlpacaEval output, "
                                                       "or JSONL of id, instruction, output. pairwise: two files.")],
    output: Annotated[Path, typer.Option("--out", "-o", help="JSONL of verdicts; appended to and resumed.")],
    judge_url: Annotated[str | None, typer.Option("--judge-url", help="OpenAI-compatible /v1 URL of the judge.")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="The judge's model name on that server.")] = None,
    judge_gguf: Annotated[Path | None, typer.Option("--judge-gguf", help="A local instruct GGUF as judge "
                                                    "(default without --judge-url: bundled SmolLM2-135M, weak).")] = None,
    api_key_env: Annotated[str, typer.Option("--api-key-env", help="Variable holding the judge's API key.")] = "OPENAI_API_KEY",
    structured: Annotated[bool, typer.Option("--structured", help="Ask the server for JSON-schema output.")] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Items judged side by side: requests "
                                             "at once to a server, or decoded in one batch by a local judge.")] = 4,
    parse_retries: Annotated[int, typer.Option("--parse-retries", min=0, help="Asks again after an unreadable reply.")] = 2,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0, help="Retries on 429 / 5xx / timeouts, with backoff.")] = 6,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds per judge request.")] = 120.0,
    cache: Annotated[Path | None, typer.Option("--cache", help="SQLite reply cache [~/.cache/untuned/judge.sqlite].")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache.")] = False,
    tags: Annotated[Path | None, typer.Option("--tags", help="Tagged queries (just-eval's) joined by id.")] = None,
    category: Annotated[str | None, typer.Option("--category", help="Only items of this category tag (regular, safety).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Judge at most this many items.")] = None,
    ids: Annotated[str | None, typer.Option("--ids", help="Comma-separated ids to judge.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Set aside a verdict file made by another judge or template.")] = False,
) -> None:  # fmt: skip
    """Judge answers with an LLM: 1-5 scores with rationales per aspect, pairwise preferences, or query tags."""
    if (mode == "pairwise") != (len(answers) == 2) or len(answers) > 2:
        raise UntunedError("pairwise mode takes exactly two answer files; the other modes one")
    joined = read_tags(tags) if tags else None
    items = read_answers(answers[0], tags=joined)
    if category:
        items = [i for i in items if category in i.tags.get("category", [])]
    wanted = ids_option(ids)
    if wanted:
        items = [i for i in items if i.id in set(wanted)]
    items = items[:limit]
    seconds = {i.id: i for i in read_answers(answers[1], tags=joined)} if mode == "pairwise" else None
    model = load_judge_model(url=judge_url, model=judge_model, gguf=judge_gguf, api_key_env=api_key_env, timeout=timeout,
                             max_retries=max_retries, structured=structured, parallel=concurrency)  # fmt: skip
    store = None if no_cache else JudgeCache(cache or default_cache())
    judge = Judge(model, TEMPLATES[mode], store, parse_retries=parse_retries)
    with progress() as bar:
        task = bar.add_task("judging", total=None, note="")
        tally = {"scored": 0, "failed": 0, "cached": 0}

        def count(verdict) -> None:
            tally[verdict.status] += 1
            tally["cached"] += verdict.cached
            bar.update(task, advance=1, note=f"{tally['failed']} failed · {tally['cached']} cached")

        summary = judge.run(items, output, seconds=seconds, concurrency=concurrency, force=force,
                            on_start=lambda n: bar.update(task, total=n), on_verdict=count)  # fmt: skip
    out.print(
        f"{summary.done} scored, {summary.failed} failed, {summary.skipped} already in {output}; "
        f"{summary.counts['cached']} from the cache, {summary.counts['requests']} requests in {summary.seconds:.1f} s"
    )
    if summary.failed:
        out.print(f"[yellow]{summary.failed} items failed; their raw replies are in {output}. Rerun to retry them.[/]")
