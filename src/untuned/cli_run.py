"""Batch commands of the CLI: generate, merge, export, import. Registered on ``untuned.cli.app``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from untuned.cli import (
    ApiKeyEnv,
    BackendName,
    Device,
    MaxTokens,
    Model,
    NCtx,
    Prompt,
    RemoteModel,
    RepetitionPenalty,
    Seed,
    Stop,
    Temperature,
    TopK,
    TopP,
    Verbose,
    _assistant,
    _friendly,
    _progress,
    app,
    out,
)  # fmt: skip
from untuned.data import DATASETS, load_items, select
from untuned.errors import UntunedError
from untuned.run import RunFile, RunRecord, export, generate, import_answers, merge, run_settings


@app.command("generate")
@_friendly
def generate_command(
    dataset: Annotated[str, typer.Argument(help=f"One of: {', '.join(DATASETS)}.")],
    output: Annotated[Path, typer.Option("--out", "-o", help="JSONL file of answers; appended to and resumed.")],
    data_file: Annotated[Path | None, typer.Option("--data-file", help="Local JSON/JSONL copy of the dataset.")] = None,
    field: Annotated[str, typer.Option("--field", help="Field holding the instruction (json dataset).")] = "instruction",
    id_field: Annotated[str, typer.Option("--id-field", help="Field holding the item id.")] = "id",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Answer at most this many items.")] = None,
    ids: Annotated[str | None, typer.Option("--ids", help="Comma-separated ids to answer.")] = None,
    shard: Annotated[str | None, typer.Option("--shard", help="i/n: this process answers every n-th item from i.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Set aside an output file made with other settings.")] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Items in flight (remote backends).")] = 1,
    model: Model = "default", backend: BackendName = None, remote_model: RemoteModel = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY", n_ctx: NCtx = None, device: Device = "auto",
    prompt: Prompt = "helpful", temperature: Temperature = 0.0, top_p: TopP = 1.0, top_k: TopK = 0,
    max_tokens: MaxTokens = 512, repetition_penalty: RepetitionPenalty = 1.1, seed: Seed = None,
    stop: Stop = None, verbose: Verbose = False,
) -> None:  # fmt: skip
    """Answer a benchmark set with URIAL into a resumable JSONL file."""
    items = select(
        load_items(dataset, data_file=data_file, field=field, id_field=id_field),
        ids=[i.strip() for i in ids.split(",")] if ids else None, limit=limit, shard=shard,
    )  # fmt: skip
    assistant = _assistant(
        model=model, backend=backend, remote_model=remote_model, api_key_env=api_key_env, n_ctx=n_ctx, device=device,
        prompt=prompt, temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens,
        repetition_penalty=repetition_penalty, seed=seed, stop=stop, verbose=verbose,
    )  # fmt: skip
    progress = _progress()
    task = progress.add_task("answering", total=None, note="")
    tokens = 0

    def start(remaining: int) -> None:  # called once the output file is checked
        progress.update(task, total=remaining)
        progress.start()

    def advance(record: RunRecord) -> None:
        nonlocal tokens
        tokens += sum(record.completion_tokens)
        elapsed = progress.tasks[task].elapsed or 1e-9
        done = progress.tasks[task].completed + 1
        progress.update(task, advance=1, note=f"{done / elapsed:.2f} items/s · {tokens / elapsed:.1f} tok/s")

    try:
        summary = generate(
            assistant, items, output, settings=run_settings(assistant, model), force=force,
            concurrency=concurrency, on_start=start, on_record=advance,
        )  # fmt: skip
    finally:
        progress.stop()
    out.print(
        f"{summary.done} answered, {summary.skipped} already in {output}, {summary.total} selected; "
        f"{summary.tokens} tokens in {summary.seconds:.1f} s ({summary.tokens_per_second:.1f} tok/s)"
    )


@app.command("merge")
@_friendly
def merge_command(
    output: Annotated[Path, typer.Argument(help="New JSONL file to write.")],
    shards: Annotated[list[Path], typer.Argument(help="Shard files written by generate --shard.")],
) -> None:
    """Merge the shard files of one run (same settings) into one file, each id once."""
    count = merge(shards, output)
    out.print(f"{count} records written to {output}")


@app.command("export")
@_friendly
def export_command(
    run: Annotated[Path, typer.Argument(help="JSONL file written by generate.")],
    output: Annotated[Path, typer.Option("--out", "-o", help="JSON file to write.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="just-eval or alpaca-eval.")] = "just-eval",
) -> None:
    """Write a run in the input format of just-eval or AlpacaEval."""
    count = export(run, output, fmt=fmt)
    out.print(f"{count} answers written to {output} ({fmt} format)")


@app.command("import")
@_friendly
def import_command(
    answers: Annotated[Path, typer.Argument(help="just-eval / AlpacaEval output, or a JSONL of id, instruction, output.")],
    output: Annotated[Path, typer.Option("--out", "-o", help="New JSONL file in untuned's run format.")],
    generator: Annotated[str | None, typer.Option("--generator", help="Name of the model that wrote them.")] = None,
) -> None:
    """Convert another tool's answers into untuned's run format, to compare with our runs."""
    if output.exists():
        raise UntunedError(f"{output} exists; import writes a new file.")
    records = import_answers(answers, generator=generator)
    RunFile(output).append(*records)
    out.print(f"{len(records)} answers imported into {output}")
