"""``untuned shift``: token distribution shift analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from untuned.answers import ContextKind, generate_answers, read_answers, read_tags
from untuned.backends import Sampling
from untuned.cli.common import LOADING, ModelOptions, friendly, ids_option, model_options, out, progress, setup_logging
from untuned.data import DatasetName, load_items, select
from untuned.errors import UntunedError
from untuned.shift import ShiftAnalyzer, ShiftMode, ShiftSummary, TokenFormat, run_shift, write_outputs


@friendly
@model_options(*LOADING, "prompt", "verbose")
def shift_command(
    mode: Annotated[
        ShiftMode,
        typer.Argument(
            help="text: base scores any answers · pair: base vs aligned model (same "
            "tokenizer) · context: base without vs with the URIAL prefix."
        ),
    ],
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder for the results; resumed if it exists.")],
    answers: Annotated[
        Path | None,
        typer.Option(
            "--answers",
            "-a",
            help="Answers to analyse: an untuned run, just-eval / AlpacaEval output, or JSONL of id, instruction, output.",
        ),
    ] = None,
    tags: Annotated[Path | None, typer.Option("--tags", help="Tagged queries (just-eval's) joined by id.")] = None,
    dataset: Annotated[DatasetName | None, typer.Option("--dataset", help="Questions to answer first.")] = None,
    data_file: Annotated[Path | None, typer.Option("--data-file", help="Local copy of --dataset.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Analyse at most this many answers.")] = None,
    ids: Annotated[str | None, typer.Option("--ids", help="Comma-separated ids to analyse.")] = None,
    aligned: Annotated[str | None, typer.Option("--aligned", help="pair mode: the aligned model (a --model spec).")] = None,
    aligned_template: Annotated[
        bool,
        typer.Option(
            "--aligned-template/--no-aligned-template",
            help="pair mode: show the aligned model the query in its own chat template (as the original analysis does).",
        ),
    ] = True,
    context: Annotated[ContextKind, typer.Option("--context", help="Query shown plain or in the URIAL prompt.")] = "plain",
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=50, help="Top tokens kept per position.")] = 5,
    token_format: Annotated[TokenFormat, typer.Option("--format", help="File format of the per-token table.")] = "jsonl",
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG plots.")] = True,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="Length of generated answers.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Answers scored together (transformers, text).")] = 8,
    force: Annotated[bool, typer.Option("--force", help="Set aside an output folder made with other settings.")] = False,
    *,
    options: ModelOptions,
) -> None:
    """Rank every answer token under the base model: unshifted (1), marginal (2-3), shifted (>3)."""
    setup_logging(options.verbose)
    if mode == "pair" and not aligned:
        raise UntunedError("pair mode needs --aligned MODEL (an aligned model sharing the base's tokenizer)")
    if answers is None and (mode == "text" or dataset is None):
        raise UntunedError(f"{mode} mode needs --answers FILE" + ("" if mode == "text" else " or --dataset to answer first"))
    prompt_set = options.prompt_set()
    wanted = ids_option(ids)
    base = options.load()
    second = options.load(aligned) if mode == "pair" else options.load() if mode == "context" else None
    analyzer = ShiftAnalyzer(
        base,
        mode=mode,
        aligned=second,
        context=context,
        prompt=prompt_set,
        top_k=top_k,
        aligned_template=aligned_template and mode == "pair",
    )

    with progress() as bar:
        if answers is not None:
            items = read_answers(answers, tags=read_tags(tags) if tags else None)
            items = select(items, ids=wanted, limit=limit, where="the answers")
        else:
            questions = select(load_items(dataset, data_file=data_file), ids=wanted, limit=limit)
            writer = second if mode == "pair" else base
            task = bar.add_task(f"answering with {writer.name}", total=len(questions), note="")
            items = generate_answers(
                writer,
                questions,
                context="urial" if mode == "context" else context,
                prompt=prompt_set,
                sampling=Sampling(max_tokens=max_tokens),
                on_answer=lambda _: bar.advance(task),
            )
        task = bar.add_task("scoring", total=None, note="")
        counted = {"tokens": 0}

        def scored(example) -> None:
            counted["tokens"] += len(example.tokens)
            elapsed = bar.tasks[task].elapsed or 1e-9
            bar.update(task, advance=1, note=f"{counted['tokens'] / elapsed:.0f} tok/s")

        run = run_shift(
            analyzer,
            items,
            output,
            force=force,
            on_start=lambda n: bar.update(task, total=n),
            on_example=scored,
            batch_size=batch_size,
        )
    summary = write_outputs(run.records, output, analyzer.settings, tokens=token_format, plots=plots)
    _print_summary(summary, output)


def _print_summary(summary: ShiftSummary, output: Path) -> None:
    kl_label = "mean KL" if summary.kl_method == "full" else "mean KL (top-k only)"
    table = Table(
        "group", "answers", "tokens", "unshifted", "marginal", "shifted", kl_label, title=f"{summary.mode} · {summary.base}"
    )
    rows = [("all", summary.overall), *summary.by_dataset.items()]
    for name, group in rows:
        kl = "" if group.mean_kl is None else f"{group.mean_kl:.4f}"
        table.add_row(
            name,
            str(group.examples),
            str(group.tokens),
            *(f"{100 * group.ratios[c]:.1f}%" for c in ("unshifted", "marginal", "shifted")),
            kl,
        )
    out.print(table)
    fades = " → ".join(f"{b.label}: {100 * b.shifted:.0f}%" for b in summary.by_position)
    out.print(f"shifted by position: {fades}")
    out.print("most shifted tokens: " + ", ".join(f"{t.text!r}×{t.count}" for t in summary.top_shifted[:10]))
    if summary.truncated:
        out.print(f"[yellow]{summary.truncated} answers were cut to fit the context window[/]")
    out.print(f"written: {output}/summary.json, shift.html, tokens.*, plots/")
