"""Items to answer: a benchmark's items by name (each benchmark's module in :mod:`untuned.benchmarks` says
how to read it) and the selection of some of them (ids, a shard, a limit).

A malformed input line raises :class:`DataFileError` naming the file and line before anything is
generated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TypeVar

from untuned.benchmarks import Item, benchmark
from untuned.errors import UntunedError

__all__ = ["DatasetName", "Item", "load_items", "parse_shard", "select"]

DatasetName = str  # a benchmark's name: untuned.benchmarks.benchmark_names() lists them


def load_items(
    name: DatasetName, *, data_file: str | Path | None = None, field: str = "instruction", id_field: str = "id"
) -> list[Item]:
    """Load a benchmark set by name (its module in untuned.benchmarks says how); ``data_file`` reads a local
    copy instead of the hub."""
    return benchmark(name).load(data_file=data_file, field=field, id_field=id_field)


class HasId(Protocol):
    id: str


Selected = TypeVar("Selected", bound=HasId)


def select(
    items: list[Selected],
    *,
    ids: list[str] | None = None,
    limit: int | None = None,
    shard: str | None = None,
    where: str = "the dataset",
) -> list[Selected]:
    """Filter by ids (every one must be among ``items``: an error names those missing from ``where``),
    then take shard ``i/n`` (0-based: every n-th item from i), then the first ``limit``. Items, answers
    and anything else with an ``id``."""
    if ids:
        wanted = set(ids)
        missing = wanted - {item.id for item in items}
        if missing:
            raise UntunedError(f"ids not in {where}: {', '.join(sorted(missing))}")
        items = [item for item in items if item.id in wanted]
    if shard:
        index, count = parse_shard(shard)
        items = items[index::count]
    return items[:limit] if limit is not None else items


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UntunedError(f"--shard takes i/n with 0 <= i < n, e.g. 0/4; got {text!r}") from None
    if not 0 <= index < count:
        raise UntunedError(f"--shard takes i/n with 0 <= i < n, e.g. 0/4; got {text!r}")
    return index, count
