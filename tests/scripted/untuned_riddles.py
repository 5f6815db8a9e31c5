"""A benchmark added by a plugin, in one file (docs/architecture.md, "Adding a benchmark"): riddles, each
row a ``riddle`` and a ``kind`` (its category); word riddles are answered at temperature 0.5, the rest
greedily, unless a temperature is given; judged for brevity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from untuned.benchmarks import Benchmark, Item
from untuned.errors import DataFileError


def read_row(path: Path, number: int, index: int, row: dict[str, Any], field: str, id_field: str) -> Item:
    if not isinstance(row.get("riddle"), str):
        raise DataFileError(path, number, "a riddle row needs a 'riddle' text")
    return Item(id=str(row.get("id", index)), turns=(row["riddle"],), dataset="riddles", meta={"category": row.get("kind")})


BENCHMARK = Benchmark(
    name="riddles",
    description="riddles (a plugin's benchmark)",
    read_row=read_row,
    temperature_by_category={"word": 0.5},
    judge_modes=("brevity",),
    tags={"category": ("word", "number")},
    tag_fields=("category",),
)
