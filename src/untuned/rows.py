"""Rows of data files: JSON arrays and JSON Lines, read the same way, each row with the line it came
from, so that a malformed row is named by file and line (:class:`DataFileError`); and the small
conversions the readers share."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from untuned.errors import DataFileError, UntunedError

Rows = Iterable[tuple[int, dict[str, Any]]]


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for a JSONL file, or (1, element) for each element of a JSON array file."""
    path = Path(path)
    if not path.is_file():
        raise UntunedError(f"input file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataFileError(path, exc.lineno, f"invalid JSON: {exc.msg}") from exc
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise DataFileError(path, 1, f"element {index} is not an object")
            yield 1, row
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFileError(path, number, f"invalid JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise DataFileError(path, number, "expected a JSON object")
        yield number, row


def as_label_list(value: Any) -> Any:
    """A tag list as a list: copies of just-eval on the Hub hold ``task_types`` and ``topics`` as the
    text of a list (``"['info-seek']"``); anything that is not such a text is returned unchanged."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            return value
        if isinstance(parsed, list):
            return [str(v) for v in parsed]
    return value


def native_id(ident: str) -> int | str:
    """just-eval's ids are integers: an id that is the text of an integer is written as one."""
    return int(ident) if ident.isdigit() and str(int(ident)) == ident else ident
