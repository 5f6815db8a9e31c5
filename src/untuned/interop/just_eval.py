"""just-eval's judged files (JSON arrays whose records carry ``parsed_result``) as verdicts."""

from __future__ import annotations

import math
from pathlib import Path

from untuned.errors import DataFileError, ReplyError
from untuned.judge.verdicts import Verdict, make_verdict
from untuned.rows import Rows, read_rows


def just_eval_score(result: object) -> float | int | None:
    """A score as just-eval's ``report`` reads it: "N/A" is None (its report counts it as 5, untuned's
    ``--na five``), anything ``float()`` takes is that number (4.5 included); other text is unreadable
    (just-eval's report would stop on it)."""
    value = result.get("score") if isinstance(result, dict) else result
    if isinstance(value, str) and value.strip() == "N/A":
        return None
    if isinstance(value, bool):
        raise ReplyError(f"score {value!r} is not a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ReplyError(f"score {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ReplyError(f"score {value!r} is not a number")
    return int(number) if number.is_integer() else number


def _config(row: dict, number: int, index: int, path: Path) -> dict:
    """The row's ``eval_config`` (an object in just-eval's files: its mode and judge model)."""
    config = row.get("eval_config", {})
    if not isinstance(config, dict):
        kind, shown = type(config).__name__, str(config)[:40]
        raise DataFileError(
            path, number, f"record {index}: eval_config is {kind} {shown!r}; just-eval writes an object (mode, gpt)"
        )
    return config


def _verdict_from_just_eval(row: dict, number: int, index: int, path: Path) -> Verdict:
    if not isinstance(row, dict):
        raise DataFileError(path, number, f"record {index} is {type(row).__name__}, not an object")
    config = _config(row, number, index, path)
    parsed = row.get("parsed_result")
    mode = str(config.get("mode", ""))
    base = {
        "id": str(row.get("id", index)),
        "template": f"just-eval:{mode or 'score'}",
        "judge": str(config.get("gpt", "")),
        "generator": row.get("generator_cand") or row.get("generator"),
        "dataset": row.get("dataset"),
        "query": row.get("input") or row.get("instruction") or "",
        "answer": row.get("output_cand") or row.get("output") or "",
    }
    for field in ("generator", "dataset", "query", "answer"):
        if base[field] is not None and not isinstance(base[field], str):
            raise DataFileError(path, number, f"record {index}: {field} is {type(base[field]).__name__}, not text")
    if not isinstance(parsed, dict):
        return make_verdict(**base, mode="safety" if "safety" in mode else "multi", status="failed", raw=str(row.get("result")))
    scores, unreadable = {}, []
    for aspect, result in parsed.items():
        try:
            scores[aspect] = just_eval_score(result)
        except ReplyError:  # one unreadable score costs that aspect of that item, not the file
            unreadable.append(aspect)
    # just-eval's judge writes each aspect as {"reason": ..., "score": ...}; untuned's own files say "rationale"
    rationales = {a: str(r.get("reason", r.get("rationale", ""))) for a, r in parsed.items() if isinstance(r, dict)}
    mode = "safety" if set(scores) | set(unreadable) == {"safety"} else "multi"
    return make_verdict(**base, mode=mode, status="scored", scores=scores, rationales=rationales, unreadable=unreadable)


def read_just_eval_judged(path: str | Path, rows: Rows | None = None) -> list[Verdict]:
    """Verdicts from a judged file of just-eval (a JSON array whose records carry ``parsed_result``);
    ``rows``: the file's rows when the caller has read them already (as :func:`read_rows` gives them).
    A malformed record is a DataFileError naming the file, the record and the field."""
    rows = read_rows(path) if rows is None else rows
    return [_verdict_from_just_eval(row, number, index, Path(path)) for index, (number, row) in enumerate(rows)]
