"""Append-only JSONL files of typed records: what every long-running command writes.

Each record is one line, written with flush and fsync before :meth:`JsonlFile.append` returns,
so a process killed at any moment loses at most the record it was writing. A torn last line
(no newline) is ignored when reading, or cut off with ``repair=True``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel

from untuned.errors import DataFileError

log = logging.getLogger(__name__)
R = TypeVar("R", bound=BaseModel)


def set_aside(path: Path) -> Path:
    """Rename a previous run's file or folder to ``NAME.<time>.old`` so a new run can start there."""
    aside = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.old")
    path.rename(aside)
    log.warning("set the previous run aside as %s", aside)
    return aside


class JsonlFile(Generic[R]):
    """An append-only JSONL file whose lines are ``record_type`` records."""

    def __init__(
        self, path: str | Path, record_type: type[R], *, label: str | None = None, parse: Callable[[str], R] | None = None
    ) -> None:
        self.path = Path(path)
        self.record_type = record_type
        self.label = label or record_type.__name__
        self.parse = parse or record_type.model_validate_json  # a union of record types parses with its adapter

    def read(self, *, repair: bool = False) -> list[R]:
        """All complete records, in file order."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            log.warning("%s: ignoring a torn last line (%d bytes) from an interrupted write", self.path, len(data) - end)
            if repair:
                with self.path.open("r+b") as handle:
                    handle.truncate(end)
        records = []
        for number, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(self.parse(line))
            except ValueError as exc:
                raise DataFileError(self.path, number, f"not a {self.label}: {str(exc).splitlines()[0]}") from exc
        return records

    def append(self, *records: R) -> None:
        """Append records durably (flush and fsync) before returning."""
        self.extend(records)

    def extend(self, records: Iterable[R]) -> None:
        text = "".join(record.model_dump_json() + "\n" for record in records)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
