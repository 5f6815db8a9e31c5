"""FastChat's MT-bench judgment files (``model_judgment/*_single.jsonl``) as verdicts."""

from __future__ import annotations

from pathlib import Path

from untuned.errors import DataFileError
from untuned.judge.verdicts import Verdict, make_verdict
from untuned.rows import Rows, read_rows


def read_fastchat_judgments(path: str | Path, rows: Rows | None = None) -> list[Verdict]:
    """MT-bench verdicts from FastChat's ``model_judgment/*_single.jsonl``: one verdict per row (model,
    question and turn), duplicates kept, since FastChat's ``show_result`` averages every row; a score
    of -1, FastChat's mark of an unreadable judgment, makes a failed verdict, left out as FastChat does."""
    from untuned.judge.mt_bench import category_of

    verdicts = []
    for number, row in read_rows(path) if rows is None else rows:
        judge = row.get("judge")
        if not isinstance(judge, list) or "score" not in row or "turn" not in row:
            raise DataFileError(path, number, "expected FastChat's single-answer judgment fields (judge, score, turn)")
        try:
            score, turn = float(row["score"]), f"turn_{int(row['turn'])}"
        except (TypeError, ValueError):
            raise DataFileError(path, number, f"score {row['score']!r} or turn {row['turn']!r} is not a number") from None
        qid = str(row.get("question_id"))
        category = category_of(qid)
        scored = score != -1
        verdicts.append(
            make_verdict(
                id=qid,
                mode="mt-bench",
                template="fastchat:single",
                judge=str(judge[0]),
                generator=str(row.get("model")),
                dataset="mt-bench",
                status="scored" if scored else "failed",
                query="",
                answer="",
                scores={turn: int(score) if score.is_integer() else score} if scored else {},
                rationales={turn: str(row.get("judgment", ""))},
                tags={"category": [category]} if category else {},
                error=None if scored else "FastChat's judge gave no readable score (-1)",
            )
        )
    return verdicts
