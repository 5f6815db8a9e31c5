"""Benchmarks: one module per benchmark, each declaring where its items come from, how its answers are
sampled by default, which judge modes grade it, the vocabulary of its tags and the report sections it
feeds; found through a registry, so a plugin adds one with an entry point (group ``untuned.benchmarks``,
value ``module:attribute`` naming a :class:`Benchmark`).

>>> from untuned.benchmarks import benchmark
>>> items = benchmark("mt-bench").load(data_file="question.jsonl")
>>> benchmark("mt-bench").temperature_by_category["writing"]
0.7

Adding one takes one module and its test (docs/architecture.md, "Adding a benchmark").
"""

from __future__ import annotations

from functools import cache

from untuned.benchmarks.base import Benchmark, Item, hub_rows, items_from_rows
from untuned.errors import UntunedError
from untuned.plugins import discover


@cache
def benchmarks() -> dict[str, Benchmark]:
    """Every benchmark by name: the built-in ones, then those of installed plugins."""
    return discover(__name__, __path__, "BENCHMARK", "untuned.benchmarks", Benchmark, lambda b: b.name)


def benchmark_names() -> list[str]:
    return list(benchmarks())


def benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``; an error lists the known ones."""
    found = benchmarks().get(name)
    if found is None:
        raise UntunedError(f"unknown dataset {name!r}; known: {', '.join(benchmarks())}.")
    return found


__all__ = ["Benchmark", "Item", "benchmark", "benchmark_names", "benchmarks", "hub_rows", "items_from_rows"]
