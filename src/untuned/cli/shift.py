"""``untuned shift``: token distribution shift analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import Progress
from rich.table import Table

from untuned.answers import read_answers, read_tags
from untuned.backends import ModelSpec, Sampling
from untuned.cli.common import LOADING, ModelOptions, friendly, ids_option, model_options, out, progress, setup_logging
from untuned.data import DatasetName, load_items, select
from untuned.errors import UntunedError
from untuned.pipeline.shift import generate_answers
from untuned.shift import ShiftAnalyzer, ShiftMode, ShiftSummary, TokenFormat, run_shift, write_outputs
from untuned.shift.contexts import ContextKind
from untuned.shift.families import FAMILIES, FamilyName
from untuned.shift.records import Ranked

Mode = Annotated[
    ShiftMode,
    typer.Argument(
        help="text: base scores any answers · pair: base vs aligned model (same tokenizer) · "
        "context: base without vs with the URIAL prefix."
    ),
]
Output = Annotated[Path, typer.Option("--out", "-o", help="Folder for the results; resumed if it exists.")]
Answers = Annotated[
    Path | None,
    typer.Option(
        "--answers",
        "-a",
        help="Answers to analyse: an untuned run, just-eval / AlpacaEval output, or JSONL of id, instruction, output.",
    ),
]
Tags = Annotated[Path | None, typer.Option("--tags", help="Tagged queries (just-eval's) joined by id.")]
Dataset = Annotated[DatasetName | None, typer.Option("--dataset", help="Questions to answer first.")]
DataFile = Annotated[Path | None, typer.Option("--data-file", help="Local copy of --dataset.")]
Limit = Annotated[int | None, typer.Option("--limit", min=1, help="Analyse at most this many answers.")]
Ids = Annotated[str | None, typer.Option("--ids", help="Comma-separated ids to analyse.")]
Aligned = Annotated[str | None, typer.Option("--aligned", help="pair mode: the aligned model (a --model spec).")]
AlignedTemplate = Annotated[
    bool | None,
    typer.Option(
        "--aligned-template/--no-aligned-template",
        help="pair mode: show the aligned model the query in its own chat template (as the original analysis does).",
    ),
]
Context = Annotated[
    ContextKind | None,
    typer.Option(
        "--context",
        help="How the base model is shown the query: aligntds (the paper's analysis' context; the default of pair mode), "
        "plain (the query and a blank line; the default of text mode) or urial.",
    ),
]
Rank = Annotated[
    Ranked | None,
    typer.Option(
        "--rank",
        help="The token ranked under the base at each position: aligned-top1 (the aligned side's own choice, the "
        "paper's rule; the default where there is an aligned side) or answer (the answer's token; text mode).",
    ),
]
Protocol = Annotated[
    Literal["aligntds", "ids"] | None,
    typer.Option(
        "--protocol",
        help="pair mode: aligntds (the default: AlignTDS's pipeline — the aligned model reads URIAL's string for its "
        "family, both sides' contexts encoded by the models' own tokenizers, tokens matched by decoded text, the end "
        "scored where an answer ends with </s>, answers kept as generated, float16) or ids (the aligned model's chat "
        "template, tokens matched by id, the end always scored; --context, --rank, --end, --aligned-template apply).",
    ),
]
AlignedFamily = Annotated[
    FamilyName | None,
    typer.Option(
        "--aligned-family",
        help=f"aligntds: the aligned model's prompt family ({', '.join(FAMILIES)}); default: from its chat template.",
    ),
]
AlignedSystem = Annotated[
    Path | None,
    typer.Option(
        "--aligned-system",
        help="aligntds: a file holding the aligned model's system prompt (default: its chat template's, else none).",
    ),
]
End = Annotated[
    bool | None,
    typer.Option("--end/--no-end", help="Score the position after each answer, its end of sequence (default: pair mode)."),
]
Penalty = Annotated[
    float,
    typer.Option(
        "--repetition-penalty",
        help="Of the answers generated here (1 = none, the default: the ranks then measure the models, not a sampler).",
    ),
]
TopK = Annotated[int, typer.Option("--top-k", min=1, max=50, help="Top tokens kept per position.")]
Format = Annotated[TokenFormat, typer.Option("--format", help="File format of the per-token table.")]
Plots = Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG plots.")]
MaxTokens = Annotated[
    int | None,
    typer.Option(
        "--max-tokens", "-n", min=1, help="Length of generated answers (default: 1024 with --protocol aligntds, else 256)."
    ),
]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Answers scored together (transformers, text).")]
Force = Annotated[bool, typer.Option("--force", help="Set aside an output folder made with other settings.")]


@friendly
@model_options(*LOADING, "prompt", "verbose")
def shift_command(
    mode: Mode,
    output: Output,
    answers: Answers = None,
    tags: Tags = None,
    dataset: Dataset = None,
    data_file: DataFile = None,
    limit: Limit = None,
    ids: Ids = None,
    aligned: Aligned = None,
    aligned_template: AlignedTemplate = None,
    context: Context = None,
    top_k: TopK = 5,
    token_format: Format = "jsonl",
    plots: Plots = True,
    max_tokens: MaxTokens = None,
    batch_size: BatchSize = 8,
    force: Force = False,
    rank: Rank = None,
    end: End = None,
    protocol: Protocol = None,
    aligned_family: AlignedFamily = None,
    aligned_system: AlignedSystem = None,
    repetition_penalty: Penalty = 1.0,
    *,
    options: ModelOptions,
) -> None:
    """Rank every answer token under the base model: unshifted (1), marginal (2-3), shifted (>3).

    pair mode runs AlignTDS's pipeline by default (--protocol aligntds, docs/shift.md): the base given AlignTDS's
    context, the aligned model URIAL's string for its family and its own greedy answers, the aligned top-1
    matched by decoded text, the end scored where the answer ended; --protocol ids matches token ids instead."""
    ids_only = {"context": context, "rank": rank, "end": end, "template": aligned_template}
    aligntds_only = {"family": aligned_family, "system": aligned_system}
    protocol = _protocol(mode, protocol, ids_only, aligntds_only)
    float_type = "float16" if protocol == "aligntds" else "float32"
    _check(mode, options, aligned=aligned, answers=answers, dataset=dataset, dtype=float_type)
    prompt_set = options.prompt_set()
    base = options.load_model()
    second = options.load_model(aligned) if mode == "pair" else options.load_model() if mode == "context" else None
    max_tokens = max_tokens or (1024 if protocol == "aligntds" else 256)
    sampling = Sampling(max_tokens=max_tokens, temperature=0.0, repetition_penalty=repetition_penalty)
    made = sampling.model_dump(mode="json") if answers is None else None
    analyzer = _analyzer(mode, protocol, base, second, prompt_set, made, top_k, **ids_only, **aligntds_only)
    out.print(f"protocol: {analyzer.settings.protocol}")
    with progress() as bar:
        if answers is not None:
            items = read_answers(answers, tags=read_tags(tags) if tags else None)
            items = select(items, ids=ids_option(ids), limit=limit, where="the answers")
        else:
            questions = select(load_items(dataset, data_file=data_file), ids=ids_option(ids), limit=limit)
            items = _answered(analyzer, questions, bar, prompt=prompt_set, sampling=sampling)
        run = _score(analyzer, items, output, bar, force=force, batch_size=batch_size)
    summary = write_outputs(run.records, output, analyzer.settings, tokens=token_format, plots=plots)
    _print_summary(summary, output)


def _analyzer(mode, protocol, base, second, prompt_set, made, top_k, *, family, system, context, template, rank, end):
    """The analyzer of ``protocol`` (pair mode) or of the options given (the ids protocol, the other modes)."""
    if protocol == "aligntds":
        text = system.read_text(encoding="utf-8").rstrip("\n") if system else None
        return ShiftAnalyzer.aligntds(base, second, top_k=top_k, answers_sampling=made, family=family, system_prompt=text)
    return ShiftAnalyzer(
        base,
        mode=mode,
        aligned=second,
        context=context or ("aligntds" if mode == "pair" else "plain"),
        prompt=prompt_set,
        top_k=top_k,
        aligned_template=template is not False and mode == "pair",
        ranked=rank,
        end=end if end is not None else mode == "pair",
        answers_sampling=made,
    )


def _protocol(mode: str, protocol: str | None, ids_only: dict, aligntds_only: dict) -> str | None:
    """The pair protocol (aligntds by default). Options of the other protocol given with one are refused by name
    (aligntds fixes what --protocol ids lets you set; --aligned-family and --aligned-system are aligntds's), and
    --protocol outside pair mode."""
    if mode != "pair":
        if protocol is not None:
            raise UntunedError("--protocol applies to pair mode")
        protocol = None
    else:
        protocol = protocol or "aligntds"
    flags = {"template": "--aligned-template", "family": "--aligned-family", "system": "--aligned-system"}
    given = [flags.get(name, f"--{name}") for name, value in ids_only.items() if value is not None]
    if protocol == "aligntds" and given:
        raise UntunedError(f"--protocol aligntds fixes {', '.join(given)} as AlignTDS runs them; use --protocol ids to set them")
    if protocol != "aligntds" and any(value is not None for value in aligntds_only.values()):
        raise UntunedError("--aligned-family and --aligned-system belong to --protocol aligntds (pair mode)")
    return protocol


def _check(mode: str, options: ModelOptions, *, aligned, answers, dataset, dtype: str) -> None:
    """What a mode needs, before any model loads; scores in ``dtype`` where the backend allows (float32: fewer ties;
    float16 for AlignTDS's protocol, as its pipeline runs)."""
    setup_logging(options.verbose)
    if mode == "pair" and not aligned:
        raise UntunedError("pair mode needs --aligned MODEL (an aligned model sharing the base's tokenizer)")
    if answers is None and (mode == "text" or dataset is None):
        raise UntunedError(f"{mode} mode needs --answers FILE" + ("" if mode == "text" else " or --dataset to answer first"))
    if (
        options.load["dtype"] == "auto"
        and (options.load["backend"] or ModelSpec.parse(options.model).default_backend) == "transformers"
    ):
        options.load["dtype"] = dtype


def _answered(analyzer: ShiftAnalyzer, questions, bar: Progress, *, prompt, sampling: Sampling):
    """The answers to analyse, made first: by the aligned model in pair mode (in its chat template where the
    analysis shows it one), by the base with URIAL in context mode, else by the base given the analysis' context."""
    writer = analyzer.aligned if analyzer.mode == "pair" else analyzer.base
    task = bar.add_task(f"answering with {writer.name}", total=len(questions), note="")
    context = "urial" if analyzer.mode == "context" else "chat" if analyzer.aligned_template else analyzer.context
    return generate_answers(
        writer,
        questions,
        context=context,
        prompt=prompt,
        sampling=sampling,
        on_answer=lambda _: bar.advance(task),
        aligned_context=analyzer.aligned_context,
    )


def _score(analyzer: ShiftAnalyzer, items, output: Path, bar: Progress, *, force: bool, batch_size: int):
    """Run the analysis over ``items`` into ``output``, with a bar of tokens scored per second."""
    task = bar.add_task("scoring", total=None, note="")
    counted = {"tokens": 0}

    def scored(example) -> None:
        counted["tokens"] += len(example.tokens)
        elapsed = bar.tasks[task].elapsed or 1e-9
        bar.update(task, advance=1, note=f"{counted['tokens'] / elapsed:.0f} tok/s")

    return run_shift(
        analyzer,
        items,
        output,
        force=force,
        on_start=lambda n: bar.update(task, total=n),
        on_example=scored,
        batch_size=batch_size,
    )


def _print_summary(summary: ShiftSummary, output: Path) -> None:
    kl_label = "KL(aligned‖base)" if summary.kl_method == "full" else "KL(aligned‖base), top-k only"
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
    if summary.overall.mean_kl_top10 is not None:
        out.print(f"mean {summary.kl_top10}: {summary.overall.mean_kl_top10:.4f}")
    if summary.answer_ratios is not None:
        shares = ", ".join(f"{c} {100 * summary.answer_ratios[c]:.1f}%" for c in ("unshifted", "marginal", "shifted"))
        out.print(f"the answer's token is not the aligned top-1 at {summary.top1_differs} positions; ranking it: {shares}")
    if summary.ties:
        out.print(f"{summary.ties} positions tie with other tokens ({summary.tie_changes} would change category the other way)")
    fades = " → ".join(f"{b.label}: {100 * b.shifted:.0f}%" for b in summary.by_position)
    out.print(f"shifted by position: {fades}")
    deciles = " → ".join(f"{100 * b.shifted:.0f}%" for b in summary.by_relative_position)
    out.print(f"shifted by tenth of the answer: {deciles}")
    out.print("most shifted tokens: " + ", ".join(f"{t.text!r}×{t.count}" for t in summary.top_shifted[:10]))
    if summary.truncated:
        out.print(f"[yellow]{summary.truncated} answers were cut to fit the context window[/]")
    out.print(f"written: {output}/summary.json, shift.html, tokens.*, plots/")
