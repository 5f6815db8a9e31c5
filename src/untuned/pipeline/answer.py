"""Answering a benchmark's items into a resumable run (``untuned generate``'s file), the benchmark's own
sampling applied where the plan leaves it open."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from untuned.assistant import Assistant
from untuned.benchmarks import Benchmark, Item
from untuned.generation import GenerationRecord, GenerationSettings, choose_batching, generate, generation_settings
from untuned.pipeline.run_plan import RunPlan
from untuned.runner import RunSummary


def settings_for(plan: RunPlan, assistant: Assistant, bench: Benchmark) -> GenerationSettings:
    """The run's settings: the plan's, with the benchmark's temperature per category (MT-bench's) unless the
    plan chose a temperature."""
    by_category = None if plan.temperature_given else bench.temperature_by_category or None
    return generation_settings(
        assistant, plan.model, plan.loading, chat_template=plan.chat_template, temperature_by_category=by_category
    )


def answer(
    plan: RunPlan,
    assistant: Assistant,
    bench: Benchmark,
    items: list[Item],
    out: str | Path,
    *,
    concurrency: int = 1,
    force: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_record: Callable[[GenerationRecord], None] | None = None,
) -> tuple[RunSummary[GenerationRecord], GenerationSettings]:
    """Answer the items not yet in ``out`` (batch-invariant unless the plan asks for fast batching);
    returns the run's summary and settings."""
    choose_batching(assistant.backend, fast=plan.fast_batching)
    settings = settings_for(plan, assistant, bench)
    summary = generate(
        assistant, items, out, settings=settings, force=force, concurrency=concurrency, on_start=on_start, on_record=on_record
    )
    return summary, settings
