"""Batch runs: answer every item of a benchmark set into an append-only, resumable JSONL file.

Each finished item is one line, written with flush and fsync, so a run killed at any moment
(SIGKILL included) loses at most the item in progress. On restart, records already in the file
are skipped; a torn last line is cut off; different settings are refused unless ``force``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from untuned.assistant import Assistant
from untuned.data import DataFileError, Item, as_label_list
from untuned.errors import UntunedError
from untuned.jsonl import JsonlFile, set_aside

log = logging.getLogger(__name__)


class RunSettings(BaseModel):
    """What must match for records to belong to the same run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generator: str
    model: str
    prompt_name: str
    prompt_hash: str
    sampling: dict[str, Any]


class RunRecord(BaseModel):
    """One answered item."""

    model_config = ConfigDict(extra="forbid")

    id: str
    dataset: str | None = None
    turns: list[str]
    outputs: list[str]
    generator: str
    model: str
    prompt_name: str
    prompt_hash: str
    sampling: dict[str, Any]
    prompt_tokens: list[int | None]
    completion_tokens: list[int]
    finish_reasons: list[str]
    seconds: float
    meta: dict[str, Any] = {}

    @property
    def instruction(self) -> str:
        return self.turns[0]

    @property
    def output(self) -> str:
        """The answer to the first turn (what single-turn benchmarks judge)."""
        return self.outputs[0]

    def settings(self) -> RunSettings:
        return RunSettings(**self.model_dump(include=set(RunSettings.model_fields)))


class RunSettingsMismatch(UntunedError):
    """The output file holds a run made with other settings."""


class RunFile(JsonlFile[RunRecord]):
    """An append-only JSONL file of :class:`RunRecord`."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, RunRecord, label="run record")


@dataclass
class RunSummary:
    total: int
    skipped: int
    done: int = 0
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def run_settings(assistant: Assistant, model_spec: str) -> RunSettings:
    return RunSettings(
        generator=f"untuned/{assistant.backend.name}/{assistant.prompt.name}",
        model=model_spec,
        prompt_name=assistant.prompt.name,
        prompt_hash=assistant.prompt.content_hash,
        sampling=assistant.sampling.model_dump(mode="json"),
    )


def answer_item(assistant: Assistant, item: Item, settings: RunSettings) -> RunRecord:
    """Answer every turn of ``item``; later turns see the model's own earlier answers."""
    chat = assistant.chat()
    started = time.perf_counter()
    outputs, prompt_tokens, completion_tokens, finishes = [], [], [], []
    for turn in item.turns:
        completion = chat.send(turn)
        outputs.append(completion.text)
        prompt_tokens.append(completion.prompt_tokens)
        completion_tokens.append(completion.completion_tokens)
        finishes.append(completion.finish_reason or "length")
    return RunRecord(
        id=item.id, dataset=item.dataset, turns=list(item.turns), outputs=outputs, prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens, finish_reasons=finishes, seconds=time.perf_counter() - started,
        meta=item.meta, **settings.model_dump(),
    )  # fmt: skip


def _check_settings(existing: list[RunRecord], settings: RunSettings, path: Path) -> None:
    if not existing:
        return
    old = existing[0].settings()
    if old != settings:
        changed = [name for name in RunSettings.model_fields if getattr(old, name) != getattr(settings, name)]
        raise RunSettingsMismatch(
            f"{path} holds {len(existing)} answers made with other settings ({', '.join(changed)} differ). "
            "Write to a new file, or pass --force to set the old file aside and start again."
        )


def generate(
    assistant: Assistant,
    items: Iterable[Item],
    path: str | Path,
    *,
    settings: RunSettings,
    force: bool = False,
    concurrency: int = 1,
    on_start: Callable[[int], None] | None = None,
    on_record: Callable[[RunRecord], None] | None = None,
) -> RunSummary:
    """Answer the items not yet in ``path``, appending one record each as soon as it is done."""
    store = RunFile(path)
    items = list(items)
    try:
        existing = store.read(repair=True)
        _check_settings(existing, settings, store.path)
    except (RunSettingsMismatch, DataFileError):
        if not force:
            raise
        set_aside(store.path)
        existing = []
    done_ids = {record.id for record in existing}
    todo = [item for item in items if item.id not in done_ids]
    summary = RunSummary(total=len(items), skipped=len(items) - len(todo))
    if on_start is not None:
        on_start(len(todo))
    lock = threading.Lock()
    started = time.perf_counter()

    def finish(record: RunRecord) -> None:
        with lock:
            store.append(record)
            summary.done += 1
            summary.tokens += sum(record.completion_tokens)
            summary.seconds = time.perf_counter() - started
        if on_record is not None:
            on_record(record)

    if concurrency <= 1:
        for item in todo:
            finish(answer_item(assistant, item, settings))
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            futures = [pool.submit(answer_item, assistant, item, settings) for item in todo]
            try:
                for future in as_completed(futures):
                    finish(future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    summary.seconds = time.perf_counter() - started
    return summary


def merge(paths: Iterable[str | Path], out: str | Path) -> int:
    """Merge shard files into ``out`` (ids once each, same settings required); return the record count."""
    seen: dict[str, RunRecord] = {}
    settings: RunSettings | None = None
    for path in paths:
        for record in RunFile(path).read():
            if settings is None:
                settings = record.settings()
            elif record.settings() != settings:
                raise RunSettingsMismatch(f"{path} was made with other settings than the files before it; not merging.")
            seen.setdefault(record.id, record)
    target = RunFile(out)
    if target.path.exists():
        raise UntunedError(f"{out} exists; merge writes a new file.")
    target.append(*seen.values())
    return len(seen)


def import_answers(path: str | Path, *, generator: str | None = None) -> list[RunRecord]:
    """Read another tool's answers (just-eval or AlpacaEval files, the shared reference answers) as run records."""
    from untuned.data import read_rows

    name = generator or Path(path).stem
    records = []
    for number, row in read_rows(Path(path)):
        if not isinstance(row.get("output"), str) or not isinstance(row.get("instruction"), str):
            raise DataFileError(path, number, "fields 'instruction' and 'output' must be strings")
        records.append(
            RunRecord(
                id=str(row.get("id", len(records))), dataset=row.get("dataset"), turns=[row["instruction"]],
                outputs=[row["output"]], generator=generator or row.get("generator") or name, model=f"imported:{name}",
                prompt_name="", prompt_hash="", sampling={}, prompt_tokens=[None], completion_tokens=[0],
                finish_reasons=["stop"], seconds=0.0,
            )
        )  # fmt: skip
    return records


def _native_id(ident: str) -> int | str:
    """just-eval's ids are integers: an id that is the text of an integer is written as one."""
    return int(ident) if ident.isdigit() and str(int(ident)) == ident else ident


def export(path: str | Path, out: str | Path, *, fmt: str) -> int:
    """Write a run in the input format of just-eval or AlpacaEval (a JSON array); return the count."""
    if fmt not in ("just-eval", "alpaca-eval"):
        raise UntunedError(f"unknown export format {fmt!r}; known: just-eval, alpaca-eval.")
    records = RunFile(path).read()
    if fmt == "just-eval":
        rows = [{"id": _native_id(r.id), "instruction": r.instruction, "output": r.output, "generator": r.generator,
                 "dataset": r.dataset, **{k: as_label_list(v) for k, v in r.meta.items() if k != "dataset"}}
                for r in records]  # fmt: skip
    else:
        rows = [{"instruction": r.instruction, "output": r.output, "generator": r.generator, "dataset": r.dataset}
                for r in records]  # fmt: skip
    Path(out).write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return len(rows)
