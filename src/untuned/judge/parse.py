"""Read a judge's reply: JSON in or out of fences, trailing commas, scores as numbers or strings,
"N/A". Anything else is a :class:`ReplyError` (the caller asks again, then records a failure);
a missing or out-of-range score is never filled in.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from untuned.errors import ReplyError

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


def read_score(value: Any, *, top: int = 5, halves: bool = False) -> int | float | None:
    """A score from 1 to ``top`` from a number or string; None for an explicit N/A. Raises on anything
    else. ``halves``: a score such as 7.5 is kept (MT-bench judges give them), else it must be whole."""
    if isinstance(value, dict):
        value = value.get("score", value.get("rating"))
    if isinstance(value, bool) or value is None:
        raise ReplyError(f"no score in {value!r}")
    if isinstance(value, str):
        text = value.strip().strip(".").lower()
        if text in _NA:
            return None
        match = re.fullmatch(rf"(\d+(?:\.\d+)?)\s*(?:/\s*{top})?", text)
        if not match:
            raise ReplyError(f"score {value!r} is not a number")
        value = float(match.group(1))
    if isinstance(value, (int, float)) and 1 <= value <= top:
        if float(value).is_integer():
            return int(value)
        if halves and float(value * 2).is_integer():
            return float(value)
    raise ReplyError(f"score {value!r} is not {'a whole or half' if halves else 'an integer'} number from 1 to {top}")


# FastChat's llm_judge patterns (common.py: one_score_pattern, one_score_pattern_backup): the first "[[n]]",
# else the first "[n]"; a judge that writes neither may still say "Rating: 7" (untuned's addition, last).
FASTCHAT_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
FASTCHAT_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
_RATING = re.compile(r"(?i)\b(?:score|rating)\b\W{0,3}(\d+(?:\.\d+)?)\s*(?:/\s*10)?")


def fastchat_score(text: str) -> str | None:
    """The score FastChat's judge reads from ``text`` (as written), or None where it reads none (its -1)."""
    match = FASTCHAT_SCORE.search(text) or FASTCHAT_SCORE_BACKUP.search(text)
    return match.group(1) if match else None


def fastchat_rating(text: str) -> int | float:
    """FastChat's ``run_judge_single`` reading of a judgment, exactly: the first "[[n]]", else the first "[n]",
    as Python reads the number (7.3, 0 and 11 included), else -1."""
    found = fastchat_score(text)
    return _literal(found) if found is not None else -1


def _literal(found: str) -> int | float:
    """A number as FastChat reads it (``ast.literal_eval``); where that fails ("007"), FastChat's judge fails too:
    a ReplyError here."""
    try:
        return ast.literal_eval(found)
    except (ValueError, SyntaxError):
        raise ReplyError(f"{found!r} is not a number Python reads (FastChat's reader fails on it too)") from None


def parse_mt_bench(text: str) -> tuple[int | float, str]:
    """A score and the rationale. A "[[n]]" anywhere is read as FastChat reads it, whatever else the reply holds
    (a JSON score included) and whatever the number (7.3, 0, 11: FastChat averages them as they are); else our
    JSON reply's 1-10 score; else FastChat's "[n]"; else a "Rating: 7". Never an N/A."""
    primary = FASTCHAT_SCORE.search(text)
    if primary is not None:
        return _literal(primary.group(1)), text.strip()[:600]
    try:
        data = extract_json(text)
    except ReplyError:
        data = None
    if data is not None:
        score = read_score(field_of(data, "score"), top=10, halves=True)
        if score is None:
            raise ReplyError("an MT-bench score cannot be N/A")
        return score, str(data.get("rationale") or data.get("explanation") or "")
    found = fastchat_score(text)
    if found is not None:
        return _literal(found), text.strip()[:600]
    ratings = _RATING.findall(text)
    if not ratings:
        raise ReplyError("no score in the reply")
    score = read_score(ratings[0], top=10, halves=True)
    assert score is not None
    return score, text.strip()[:600]


def field_of(data: dict[str, Any], name: str) -> Any:
    for key, value in data.items():
        if key.strip().lower() == name:
            return value
    raise ReplyError(f"no {name!r} in the reply")


def rationale_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("rationale") or value.get("reason") or value.get("explanation") or "")
    return ""


def labels_of(value: Any, allowed: tuple[str, ...], name: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list):
        raise ReplyError(f"{name} is not a list")
    labels = [str(v).strip().lower() for v in values]
    unknown = [label for label in labels if label not in allowed]
    if unknown:
        raise ReplyError(f"unknown {name}: {', '.join(unknown)}")
    return list(dict.fromkeys(labels))


def parse_reply(template, text: str) -> dict[str, Any]:
    """Parse ``text`` as ``template`` (a judge mode) reads its replies: ``{"scores", "rationales"}``,
    ``{"winners", "rationales"}`` (pairwise) or ``{"labels"}`` (tags)."""
    return template.parse(text)
