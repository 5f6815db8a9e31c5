"""Benchmark inputs: JUST-EVAL-INSTRUCT, MT-bench, AlpacaEval, and any JSON/JSONL file.

Every loader returns :class:`Item` records. A malformed input line raises
:class:`DataFileError` naming the file and line before anything is generated.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field

from untuned.errors import DataFileError, UntunedError
from untuned.rows import as_label_list, read_rows

HUB_IDS = {"just-eval": "re-align/just-eval-instruct", "alpaca-eval": "tatsu-lab/alpaca_eval"}
# FastChat's temperatures for MT-bench answers, by category: sampled for writing and role-play, near-greedy
# for knowledge questions, greedy where there is one right answer.
MT_BENCH_TEMPERATURES = {
    "writing": 0.7,
    "roleplay": 0.7,
    "stem": 0.1,
    "humanities": 0.1,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
}
JUST_EVAL_META = ("dataset", "source_id", "category", "task_types", "topics", "difficulty")


class Item(BaseModel):
    """One benchmark query: an id and one or more user turns (MT-bench has two)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    turns: tuple[str, ...]
    dataset: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict, description="Tags and other fields of the source row.")


def just_eval_meta(row: dict[str, Any]) -> dict[str, Any]:
    """The just-eval fields of a row that untuned keeps with each item (tag lists as lists)."""
    return {k: as_label_list(row[k]) for k in JUST_EVAL_META if k in row}


def _text(path: Path, number: int, row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataFileError(path, number, f"field {key!r} is missing or not a non-empty string")
    return value


def _items_from_file(name: str, path: Path, *, field_name: str, id_field: str) -> list[Item]:
    items = []
    for index, (number, row) in enumerate(read_rows(path)):
        if name == "mt-bench":
            turns = row.get("turns")
            if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
                raise DataFileError(path, number, "field 'turns' must be a list of non-empty strings")
            items.append(
                Item(
                    id=str(row.get("question_id", index)),
                    turns=tuple(turns),
                    dataset="mt-bench",
                    meta={"category": row.get("category")},
                )
            )
            continue
        text = _text(path, number, row, field_name)
        meta = just_eval_meta(row)
        items.append(Item(id=str(row.get(id_field, index)), turns=(text,), dataset=row.get("dataset") or name, meta=meta))
    repeated = [key for key, count in Counter(item.id for item in items).items() if count > 1]
    if repeated:
        duplicate = repeated[0]
        raise UntunedError(f"{path}: id {duplicate!r} appears more than once; ids must be unique (choose --id-field)")
    return items


def _items_from_hub(name: str) -> list[Item]:  # pragma: no cover - needs network access
    try:
        import datasets
    except ImportError as exc:
        raise UntunedError(f"loading {name} from the hub needs `pip install datasets`; or pass --data-file") from exc
    try:
        if name == "just-eval":
            rows = datasets.load_dataset(HUB_IDS[name], "default", split="test")
        else:
            rows = datasets.load_dataset(HUB_IDS[name], "alpaca_eval", split="eval", trust_remote_code=True)
    except Exception as exc:
        raise UntunedError(
            f"could not load {HUB_IDS[name]} from the Hugging Face hub ({exc}). Offline, pass the file with --data-file."
        ) from exc
    items = []
    for index, row in enumerate(rows):
        meta = just_eval_meta(row)
        items.append(
            Item(id=str(row.get("id", index)), turns=(row["instruction"],), dataset=row.get("dataset") or name, meta=meta)
        )
    return items


DatasetName = Literal["just-eval", "mt-bench", "alpaca-eval", "json"]
DATASETS: tuple[DatasetName, ...] = get_args(DatasetName)


def load_items(
    name: DatasetName, *, data_file: str | Path | None = None, field: str = "instruction", id_field: str = "id"
) -> list[Item]:
    """Load a benchmark set by name; ``data_file`` reads a local copy instead of the hub."""
    if name not in DATASETS:
        raise UntunedError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}.")
    if data_file is not None:
        return _items_from_file(name, Path(data_file), field_name=field, id_field=id_field)
    if name in HUB_IDS:
        return _items_from_hub(name)
    raise UntunedError(f"the {name} dataset needs --data-file (a JSON or JSONL file).")


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
