"""Read a judge's reply: JSON in or out of fences, trailing commas, scores as numbers or strings,
"N/A". Anything else is a :class:`ReplyError` (the caller asks again, then records a failure);
a missing or out-of-range score is never filled in.
"""

from __future__ import annotations

import json
import re
from typing import Any

from untuned.errors import ReplyError
from untuned.judge.templates import DIFFICULTIES, TASK_TYPES, TOPICS, Template

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_NA = {"n/a", "na", "none", "null", "not applicable", "-"}


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in ``text``, tolerating fences, prose around it and trailing commas."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        start = candidate.find("{")
        end = candidate.rfind("}")
        if start < 0 or end <= start:
            continue
        snippet = candidate[start : end + 1]
        for attempt in (snippet, _TRAILING_COMMA.sub(r"\1", snippet)):
            try:
                value = json.loads(attempt)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise ReplyError("no JSON object in the reply")


def read_score(value: Any) -> int | None:
    """A 1-5 score from a number or string; None for an explicit N/A. Raises on anything else."""
    if isinstance(value, dict):
        value = value.get("score", value.get("rating"))
    if isinstance(value, bool) or value is None:
        raise ReplyError(f"no score in {value!r}")
    if isinstance(value, str):
        text = value.strip().strip(".").lower()
        if text in _NA:
            return None
        match = re.fullmatch(r"(\d+(?:\.0+)?)\s*(?:/\s*5)?", text)
        if not match:
            raise ReplyError(f"score {value!r} is not a number")
        value = float(match.group(1))
    if isinstance(value, (int, float)) and float(value).is_integer() and 1 <= value <= 5:
        return int(value)
    raise ReplyError(f"score {value!r} is not an integer from 1 to 5")


def _field(data: dict[str, Any], name: str) -> Any:
    for key, value in data.items():
        if key.strip().lower() == name:
            return value
    raise ReplyError(f"no {name!r} in the reply")


def _rationale(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("rationale") or value.get("reason") or value.get("explanation") or "")
    return ""


def _labels(value: Any, allowed: tuple[str, ...], name: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list):
        raise ReplyError(f"{name} is not a list")
    labels = [str(v).strip().lower() for v in values]
    unknown = [label for label in labels if label not in allowed]
    if unknown:
        raise ReplyError(f"unknown {name}: {', '.join(unknown)}")
    return list(dict.fromkeys(labels))


def parse_reply(template: Template, text: str) -> dict[str, Any]:
    """Parse ``text`` for ``template``: ``{"scores", "rationales"}``, ``{"winners", "rationales"}``
    (pairwise) or ``{"tags"}`` (tag)."""
    data = extract_json(text)
    if template.mode == "tag":
        difficulty = _labels(_field(data, "difficulty"), DIFFICULTIES, "difficulty")
        if len(difficulty) != 1:
            raise ReplyError("difficulty must be one value")
        tags = {"task_types": _labels(_field(data, "task_types"), TASK_TYPES, "task types"),
                "topics": _labels(_field(data, "topics"), TOPICS, "topics"), "difficulty": difficulty}  # fmt: skip
        return {"tags": tags}
    rationales = {}
    if template.mode == "pairwise":
        winners = {}
        for aspect in template.aspects:
            value = _field(data, aspect)
            winner = (value.get("winner") if isinstance(value, dict) else value) or ""
            winner = str(winner).strip().strip(".").lower()
            winner = {"a": "A", "answer a": "A", "b": "B", "answer b": "B", "tie": "tie", "equal": "tie"}.get(winner)
            if winner is None:
                raise ReplyError(f"{aspect}: winner must be A, B or tie")
            winners[aspect], rationales[aspect] = winner, _rationale(value)
        return {"winners": winners, "rationales": rationales}
    scores = {}
    for aspect in template.aspects:
        value = _field(data, aspect)
        scores[aspect], rationales[aspect] = read_score(value), _rationale(value)
    return {"scores": scores, "rationales": rationales}
