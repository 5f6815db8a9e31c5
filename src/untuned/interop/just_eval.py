"""just-eval's judged files (JSON arrays whose records carry ``parsed_result``) as verdicts."""

from __future__ import annotations

from pathlib import Path

from untuned.errors import ReplyError
from untuned.judge.parse import read_score
from untuned.judge.verdicts import Verdict, make_verdict
from untuned.rows import Rows, read_rows


def _verdict_from_just_eval(row: dict, number: int, path: Path) -> Verdict:
    parsed = row.get("parsed_result")
    mode = str(row.get("eval_config", {}).get("mode", ""))
    base = {
        "id": str(row.get("id", number)),
        "template": f"just-eval:{mode or 'score'}",
        "judge": str(row.get("eval_config", {}).get("gpt", "")),
        "generator": row.get("generator_cand") or row.get("generator"),
        "dataset": row.get("dataset"),
        "query": row.get("input") or row.get("instruction") or "",
        "answer": row.get("output_cand") or row.get("output") or "",
    }
    if not isinstance(parsed, dict):
        return make_verdict(**base, mode="safety" if "safety" in mode else "multi", status="failed", raw=str(row.get("result")))
    scores, unreadable = {}, []
    for aspect, result in parsed.items():
        try:
            scores[aspect] = read_score(result)
        except ReplyError:  # one unreadable score costs that aspect of that item, not the file
            unreadable.append(aspect)
    rationales = {a: str(r.get("rationale", "")) for a, r in parsed.items() if isinstance(r, dict)}
    mode = "safety" if set(scores) | set(unreadable) == {"safety"} else "multi"
    return make_verdict(**base, mode=mode, status="scored", scores=scores, rationales=rationales, unreadable=unreadable)


def read_just_eval_judged(path: str | Path, rows: Rows | None = None) -> list[Verdict]:
    """Verdicts from a judged file of just-eval (a JSON array whose records carry ``parsed_result``);
    ``rows``: the file's rows when the caller has read them already (as :func:`read_rows` gives them)."""
    rows = read_rows(path) if rows is None else rows
    return [_verdict_from_just_eval(row, index, Path(path)) for index, (_, row) in enumerate(rows)]
