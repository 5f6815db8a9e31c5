"""One resumable-run engine for every long command: ``generate``, ``shift`` and ``judge``.

A run turns work items into typed records and appends each record, as soon as it exists, to an
append-only JSONL file (flush and fsync), so a run killed at any moment loses at most the items in
progress. Started again, it skips the items already finished in the file, cuts off a torn last line,
counts an id appended twice once (the later record wins), and refuses a file made with other
settings unless ``force`` sets the old file (or folder) aside. Items run ``concurrency`` at a time,
in batches of ``batch_size`` where the work can use them.

>>> run = ResumableRun(JsonlFile(path, MyRecord), settings=my_settings, settings_of=MyRecord.settings)
>>> summary = run.run(items, lambda batch: [work(item) for item in batch], concurrency=8)
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel

from untuned.errors import DataFileError, InvalidInput, RunSettingsMismatch, UntunedError
from untuned.jsonl import JsonlFile, set_aside

R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")


def _id(thing) -> str:
    return thing.id


def _always(_record) -> bool:
    return True


@dataclass
class RunSummary(Generic[R]):
    """What a run did: items selected, skipped (finished before), done and failed now, time, tallies."""

    total: int
    skipped: int
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)
    records: list[R] = field(default_factory=list, repr=False)  # every record of the run, in file order

    def rate(self, what: str) -> float:
        """``counts[what]`` per second of this run."""
        return self.counts[what] / self.seconds if self.seconds else 0.0


class ResumableRun(Generic[T, R]):
    """A resumable run over ``store``; see the module docstring.

    ``settings``: what must match for records to belong to this run, read from each relevant
    record with ``settings_of`` or, for records that do not carry them, kept in ``settings_file``.
    ``relevant``: which records of the file belong to this kind of run (a verdict file may hold
    several modes). ``finished``: which records need no redoing (a failed verdict is redone).
    ``aside``: what ``force`` sets aside (the file, or the folder holding it).
    """

    def __init__(
        self,
        store: JsonlFile[R],
        *,
        settings: BaseModel | None = None,
        settings_of: Callable[[R], BaseModel] | None = None,
        settings_file: Path | None = None,
        relevant: Callable[[R], bool] = _always,
        finished: Callable[[R], bool] = _always,
        key: Callable[[R], str] = _id,
        item_key: Callable[[T], str] = _id,
        aside: Path | None = None,
    ) -> None:
        if settings is not None and settings_of is None and settings_file is None:
            raise InvalidInput("settings need settings_of (records carry them) or settings_file (a file beside)")
        self.store, self.settings, self.settings_of, self.settings_file = store, settings, settings_of, settings_file
        self.relevant, self.finished, self.key, self.item_key = relevant, finished, key, item_key
        self.aside = aside or store.path

    # --- before the work --------------------------------------------------------------------

    def _old_settings(self, existing: list[R]) -> tuple[BaseModel | None, int]:
        if self.settings_file is not None:
            if not self.settings_file.exists():
                return None, len(existing)
            return type(self.settings).model_validate_json(self.settings_file.read_text(encoding="utf-8")), len(existing)
        relevant = [record for record in existing if self.relevant(record)]
        return (self.settings_of(relevant[0]) if relevant else None), len(relevant)

    def _check(self, existing: list[R]) -> None:
        if self.settings is None:
            return
        old, count = self._old_settings(existing)
        if old is None or old == self.settings:
            return
        changed = [name for name in type(self.settings).model_fields if getattr(old, name) != getattr(self.settings, name)]
        raise RunSettingsMismatch(
            f"{self.aside} holds {count} records made with other settings ({', '.join(changed)} differ). "
            "Write to a new file, or pass --force to set the old one aside and start again."
        )

    def existing(self, *, force: bool = False) -> list[R]:
        """The latest record per key already in the file, after checking settings (``force``: set it aside)."""
        try:
            records = self.store.read(repair=True)
            self._check(records)
        except (RunSettingsMismatch, DataFileError):
            if not force or not self.aside.exists():
                raise
            set_aside(self.aside)
            records = []
        latest: dict[str, R] = {}
        for record in records:
            latest.pop(self.key(record), None)  # the later record wins, at the end of the order
            latest[self.key(record)] = record
        return list(latest.values())

    # --- the work ---------------------------------------------------------------------------

    def run(
        self,
        items: Sequence[T],
        work: Callable[[list[T]], list[R]],
        *,
        force: bool = False,
        concurrency: int = 1,
        batch_size: int = 1,
        tally: Callable[[R], Mapping[str, int]] | None = None,
        on_start: Callable[[int], None] | None = None,
        on_record: Callable[[R], None] | None = None,
    ) -> RunSummary[R]:
        """Turn every item not yet finished into a record; ``work`` takes a batch and returns its records."""
        keys = [self.item_key(item) for item in items]
        repeated = [k for k, n in Counter(keys).items() if n > 1]
        if repeated:
            raise UntunedError(f"id {repeated[0]!r} appears more than once in the input; ids must be unique")
        existing = self.existing(force=force)
        if self.settings_file is not None:
            self.settings_file.parent.mkdir(parents=True, exist_ok=True)
            self.settings_file.write_text(self.settings.model_dump_json(indent=2), encoding="utf-8")
        done_keys = {self.key(r) for r in existing if self.relevant(r) and self.finished(r)}
        todo = [item for item, k in zip(items, keys) if k not in done_keys]
        summary: RunSummary[R] = RunSummary(total=len(items), skipped=len(items) - len(todo))
        latest = {self.key(r): r for r in existing}
        if on_start is not None:
            on_start(len(todo))
        lock = threading.Lock()
        started = time.perf_counter()

        def keep(records: list[R]) -> None:
            for record in records:
                with lock:
                    self.store.append(record)
                    latest.pop(self.key(record), None)
                    latest[self.key(record)] = record
                    summary.done += self.finished(record)
                    summary.failed += not self.finished(record)
                    if tally is not None:
                        summary.counts.update(tally(record))
                    summary.seconds = time.perf_counter() - started
                if on_record is not None:
                    on_record(record)

        batches = [todo[i : i + max(1, batch_size)] for i in range(0, len(todo), max(1, batch_size))]
        _each_result(work, batches, keep, concurrency)
        summary.seconds = time.perf_counter() - started
        summary.records = list(latest.values())
        return summary


def _each_result(work: Callable[[list[T]], list[R]], batches: list[list[T]], keep, concurrency: int) -> None:
    """``keep(work(batch))`` for every batch, ``concurrency`` batches at once, each kept as it finishes.
    A failure cancels the batches not started and is raised."""
    if concurrency <= 1:
        for batch in batches:
            keep(work(batch))
        return
    with ThreadPoolExecutor(concurrency, thread_name_prefix="untuned-run") as pool:
        pending: set[Future] = {pool.submit(work, batch) for batch in batches}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    keep(future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise
