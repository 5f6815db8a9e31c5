"""What a benchmark is (:class:`Benchmark`) and the item record every one of them yields (:class:`Item`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from untuned.errors import DataFileError, UntunedError
from untuned.rows import read_rows


class Item(BaseModel):
    """One benchmark query: an id and one or more user turns (MT-bench has two)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    turns: tuple[str, ...]
    dataset: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict, description="Tags and other fields of the source row.")


RowReader = Callable[[Path, int, int, dict[str, Any], str, str], Item]


@dataclass(frozen=True)
class Benchmark:
    """A benchmark's declaration. ``read_row(path, number, index, row, field, id_field)`` makes one
    :class:`Item` of a row of a local file; ``hub`` is (dataset id, config, split) where it is on the Hugging
    Face Hub; ``temperature_by_category`` replaces the sampling's temperature by the item's category unless a
    temperature is given (MT-bench's); ``judge_modes`` grade its answers; ``tags`` is its label vocabulary
    (kind to labels) and ``tag_fields`` the item fields that carry tags; ``sections`` the report sections
    its verdicts feed."""

    name: str
    description: str
    read_row: RowReader
    hub: tuple[str, str, str] | None = None
    temperature_by_category: dict[str, float] = field(default_factory=dict)
    judge_modes: tuple[str, ...] = ("multi",)
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tag_fields: tuple[str, ...] = ()
    sections: tuple[str, ...] = ("just-eval",)
    turns: int = 1

    def load(self, *, data_file: str | Path | None = None, field: str = "instruction", id_field: str = "id") -> list[Item]:
        """The benchmark's items from ``data_file`` (a local JSON/JSONL copy), else from the Hub."""
        if data_file is not None:
            path = Path(data_file)
            rows = read_rows(path)
            return unique(path, [self.read_row(path, n, i, row, field, id_field) for i, (n, row) in enumerate(rows)])
        if self.hub is None:
            raise UntunedError(f"the {self.name} dataset needs --data-file (a JSON or JSONL file).")
        return items_from_rows(self, hub_rows(*self.hub), field, id_field)  # pragma: no cover - needs the network

    def item_tags(self, item: Item) -> set[str]:
        """The item's tags as one set (what a plan's ``tags`` filter matches)."""
        found: set[str] = set()
        for name in self.tag_fields:
            value = item.meta.get(name)
            values = value if isinstance(value, list) else [value] if value else []
            found |= {str(v) for v in values}
        return found


def unique(path: Path, items: list[Item]) -> list[Item]:
    repeated = [key for key, count in Counter(item.id for item in items).items() if count > 1]
    if repeated:
        raise UntunedError(f"{path}: id {repeated[0]!r} appears more than once; ids must be unique (choose --id-field)")
    return items


def text_field(path: Path, number: int, row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataFileError(path, number, f"field {key!r} is missing or not a non-empty string")
    return value


def hub_rows(dataset: str, config: str, split: str) -> Iterable[dict]:  # pragma: no cover - needs the network
    try:
        import datasets
    except ImportError as exc:
        raise UntunedError(f"loading {dataset} from the hub needs `pip install datasets`; or pass --data-file") from exc
    try:
        return datasets.load_dataset(dataset, config, split=split, trust_remote_code=True)
    except Exception as exc:
        raise UntunedError(
            f"could not load {dataset} from the Hugging Face hub ({exc}). Offline, pass the file with --data-file."
        ) from exc


def items_from_rows(bench: Benchmark, rows: Iterable[dict], field: str, id_field: str) -> list[Item]:  # pragma: no cover
    return [
        bench.read_row(Path(bench.hub[0] if bench.hub else bench.name), 0, i, dict(row), field, id_field)
        for i, row in enumerate(rows)
    ]
