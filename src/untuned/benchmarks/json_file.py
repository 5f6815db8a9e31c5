"""A user's own set: any JSON array or JSONL file of rows with an instruction (``--field``) and an id (``--id-field``)."""

from __future__ import annotations

from untuned.benchmarks.base import Benchmark
from untuned.benchmarks.just_eval import reader

BENCHMARK = Benchmark(
    name="json",
    description="your own queries: any JSON/JSONL file (--data-file, --field, --id-field)",
    read_row=reader("json"),
    judge_modes=("multi",),
)
