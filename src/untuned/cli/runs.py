"""``untuned generate``, ``merge``, ``export`` and ``import``: runs of answers to a benchmark, and other tools' answer files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from untuned.answers import import_answers
from untuned.benchmarks import benchmark
from untuned.cli.common import ModelOptions, friendly, ids_option, model_options, out, progress
from untuned.data import select
from untuned.errors import UntunedError
from untuned.generation import GenerationFile, GenerationRecord, merge
from untuned.interop import ExportFormat, export_run
from untuned.pipeline import answer

Dataset = Annotated[
    str,
    typer.Argument(help="The benchmark: just-eval, mt-bench, alpaca-eval, json (any --data-file), or a plugin's."),
]
RunFile = Annotated[Path, typer.Option("--out", "-o", help="JSONL file of answers; appended to and resumed.")]
DataFile = Annotated[Path | None, typer.Option("--data-file", help="Local JSON/JSONL copy of the dataset.")]
Field = Annotated[str, typer.Option("--field", help="Field holding the instruction (json dataset).")]
IdField = Annotated[str, typer.Option("--id-field", help="Field holding the item id.")]
Limit = Annotated[int | None, typer.Option("--limit", min=1, help="Answer at most this many items.")]
Ids = Annotated[str | None, typer.Option("--ids", help="Comma-separated ids to answer.")]
Shard = Annotated[str | None, typer.Option("--shard", help="i/n: this process answers every n-th item from i.")]
Force = Annotated[bool, typer.Option("--force", help="Set aside an output file made with other settings.")]
Concurrency = Annotated[
    int,
    typer.Option(
        "--concurrency",
        "-c",
        min=1,
        help="Items answered side by side: decoded in one batch by a local model, requests at once to a server.",
    ),
]
ChatTemplate = Annotated[
    bool,
    typer.Option(
        "--chat-template",
        help="Answer in the model's own chat template instead of URIAL (an instruct model: the aligned side of a comparison).",
    ),
]
FastBatching = Annotated[
    bool,
    typer.Option(
        "--fast-batching",
        help="Decode more than 7 items per step (llama.cpp): faster, but a greedy answer may then differ with "
        "--concurrency, as llama.cpp's kernels round larger batches otherwise. Recorded in the run's settings.",
    ),
]


@friendly
@model_options()
def generate_command(
    ctx: typer.Context,
    dataset: Dataset,
    output: RunFile,
    data_file: DataFile = None,
    field: Field = "instruction",
    id_field: IdField = "id",
    limit: Limit = None,
    ids: Ids = None,
    shard: Shard = None,
    force: Force = False,
    concurrency: Concurrency = 1,
    chat_template: ChatTemplate = False,
    fast_batching: FastBatching = False,
    *,
    options: ModelOptions,
) -> None:
    """Answer a benchmark set with URIAL into a resumable JSONL file.

    mt-bench: both turns are answered, the second seeing the first; each category gets FastChat's
    temperature (writing and roleplay 0.7, stem and humanities 0.1, the rest greedy) unless
    --temperature is given, which then holds for every question."""
    bench = benchmark(dataset)
    items = select(bench.load(data_file=data_file, field=field, id_field=id_field), ids=ids_option(ids), limit=limit, shard=shard)
    options.load["parallel"] = max(options.load.get("parallel", 1), concurrency)  # a local model's slots: the items in flight
    assistant = options.assistant(chat_template=chat_template)
    plan = options.run_plan(
        temperature_given=ctx.get_parameter_source("temperature").name != "DEFAULT",
        chat_template=chat_template,
        fast_batching=fast_batching,
    )
    with AnswerProgress() as shown:
        summary, settings = answer(
            plan,
            assistant,
            bench,
            items,
            output,
            force=force,
            concurrency=concurrency,
            on_start=shown.start,
            on_record=shown.advance,
        )
    if settings.temperature_by_category:
        listed = ", ".join(f"{category} {t:g}" for category, t in settings.temperature_by_category.items())
        out.print(f"{bench.name}: per-category temperatures ({listed}); --temperature overrides them")
    out.print(
        f"{summary.done} answered, {summary.skipped} already in {output}, {summary.total} selected; "
        f"{summary.counts['tokens']} tokens in {summary.seconds:.1f} s ({summary.rate('tokens'):.1f} tok/s)"
    )


class AnswerProgress:
    """The bar of a generation run, shown once the output file is checked: items and tokens per second."""

    def __init__(self) -> None:
        self.bar = progress()
        self.task = self.bar.add_task("answering", total=None, note="")
        self.tokens = 0

    def __enter__(self) -> AnswerProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def start(self, remaining: int) -> None:
        self.bar.update(self.task, total=remaining)
        self.bar.start()

    def advance(self, record: GenerationRecord) -> None:
        self.tokens += sum(record.completion_tokens)
        task = self.bar.tasks[self.task]
        elapsed = task.elapsed or 1e-9
        note = f"{(task.completed + 1) / elapsed:.2f} items/s · {self.tokens / elapsed:.1f} tok/s"
        self.bar.update(self.task, advance=1, note=note)


@friendly
def merge_command(
    output: Annotated[Path, typer.Argument(help="New JSONL file to write.")],
    shards: Annotated[list[Path], typer.Argument(help="Shard files written by generate --shard.")],
) -> None:
    """Merge the shard files of one run (same settings) into one file, each id once."""
    count = merge(shards, output)
    out.print(f"{count} records written to {output}")


@friendly
def export_command(
    run: Annotated[Path, typer.Argument(help="JSONL file written by generate.")],
    output: Annotated[Path, typer.Option("--out", "-o", help="JSON file to write.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="The tool whose input format to write.")] = "just-eval",
    model_id: Annotated[
        str | None, typer.Option("--model-id", help="fastchat: the model_id to write (default: the run's generator).")
    ] = None,
) -> None:
    """Write a run in the input format of just-eval or AlpacaEval (a JSON array), or an MT-bench run as
    FastChat's model_answer/<model>.jsonl, which FastChat's own gen_judgment.py grades."""
    count = export_run(run, output, fmt=fmt, model_id=model_id)
    out.print(f"{count} answers written to {output} ({fmt} format)")


@friendly
def import_command(
    answers: Annotated[Path, typer.Argument(help="just-eval / AlpacaEval output, or a JSONL of id, instruction, output.")],
    output: Annotated[Path, typer.Option("--out", "-o", help="New JSONL file in untuned's run format.")],
    generator: Annotated[str | None, typer.Option("--generator", help="Name of the model that wrote them.")] = None,
) -> None:
    """Convert another tool's answers into untuned's run format, to compare with our runs."""
    if output.exists():
        raise UntunedError(f"{output} exists; import writes a new file.")
    records = import_answers(answers, generator=generator)
    GenerationFile(output).append(*records)
    out.print(f"{len(records)} answers imported into {output}")
