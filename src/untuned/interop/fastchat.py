"""FastChat's MT-bench files: its answers (``model_answer/*.jsonl``, with ``question.jsonl``), reference answers
(``reference_answer/*.jsonl``) and judgments as verdicts, single-answer (``model_judgment/*_single.jsonl``)
and pairwise (``model_judgment/*_pair.jsonl``)."""

from __future__ import annotations

from pathlib import Path

from untuned.benchmarks.mt_bench import MtBenchItem, category_of
from untuned.errors import DataFileError, UntunedError
from untuned.generation import generation_records
from untuned.judge.verdicts import Verdict, make_verdict
from untuned.rows import Rows, read_rows


def _choice_turns(path: str | Path, number: int, row: dict) -> list[str]:
    try:
        turns = row["choices"][0]["turns"]
    except (KeyError, IndexError, TypeError):
        raise DataFileError(path, number, "expected FastChat's choices[0].turns") from None
    if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
        raise DataFileError(path, number, "choices[0].turns must be a list of strings")
    return turns


def read_references(path: str | Path) -> dict[str, list[str]]:
    """Reference answers by question id, from a FastChat ``reference_answer/*.jsonl`` file."""
    return {str(row.get("question_id")): _choice_turns(path, number, row) for number, row in read_rows(path)}


def read_questions(path: str | Path) -> dict[str, dict]:
    """MT-bench questions (``question_id``, ``category``, ``turns``) by id."""
    return {str(row.get("question_id")): row for _, row in read_rows(path)}


def read_mt_bench_answers(path: str | Path, *, questions: str | Path | None = None) -> list[MtBenchItem]:
    """Answers to MT-bench: an ``untuned generate mt-bench`` run (turns included), or a FastChat
    ``model_answer/*.jsonl`` file, whose turns come from ``questions`` (FastChat's ``question.jsonl``)."""
    rows = list(read_rows(path))
    if rows and "choices" in rows[0][1]:
        if questions is None:
            raise UntunedError(f"{path} is a FastChat answer file: pass the questions with --questions")
        known = read_questions(questions)
        items = []
        for number, row in rows:
            qid = str(row.get("question_id"))
            if qid not in known:
                raise DataFileError(path, number, f"question {qid} is not in {questions}")
            question = known[qid]
            items.append(
                MtBenchItem(
                    id=qid,
                    turns=list(question["turns"]),
                    outputs=_choice_turns(path, number, row),
                    category=question.get("category") or category_of(qid),
                    generator=row.get("model_id"),
                )
            )
        return items

    what = "MT-bench answers (neither a run of `untuned generate mt-bench` nor FastChat's model_answer rows)"
    return [
        MtBenchItem(
            id=r.id, turns=r.turns, outputs=r.outputs, category=r.meta.get("category") or category_of(r.id), generator=r.generator
        )
        for r in generation_records(path, rows, what=what)
    ]


def read_fastchat_judgments(path: str | Path, rows: Rows | None = None) -> list[Verdict]:
    """MT-bench verdicts from FastChat's ``model_judgment/*_single.jsonl``: one verdict per row (model,
    question and turn), duplicates kept, since FastChat's ``show_result`` averages every row; a score
    of -1, FastChat's mark of an unreadable judgment, makes a failed verdict, left out as FastChat does."""
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


FASTCHAT_WINNERS = {"model_1": "A", "model_2": "B", "tie": "tie"}  # g1_winner / g2_winner, the first model's side


def read_fastchat_pair_judgments(path: str | Path, rows: Rows | None = None) -> list[Verdict]:
    """MT-bench pairwise verdicts from FastChat's ``model_judgment/*_pair.jsonl``: one verdict per row
    (model_1 against model_2 on a question and turn), both orders' winners kept (``g1_winner``, and
    ``g2_winner``, which FastChat has already turned back to the first model's side). A row whose either
    order is ``error`` makes a failed verdict, left out as FastChat's ``show_result`` does."""
    verdicts = []
    for number, row in read_rows(path) if rows is None else rows:
        missing = [key for key in ("model_1", "model_2", "g1_winner", "g2_winner") if not isinstance(row.get(key), str)]
        if missing:
            raise DataFileError(
                path, number, f"expected FastChat's pairwise judgment fields: {', '.join(missing)} missing or not text"
            )
        orders = [row["g1_winner"], row["g2_winner"]]
        unknown = [w for w in orders if w not in FASTCHAT_WINNERS and w != "error"]
        if unknown:
            raise DataFileError(path, number, f"winner {unknown[0]!r} is not model_1, model_2, tie or error")
        failed = "error" in orders
        judge = row.get("judge")
        verdicts.append(
            make_verdict(
                id=str(row.get("question_id")),
                mode="mt-bench-pair",
                template="fastchat:pair",
                judge=str(judge[0]) if isinstance(judge, list) and judge else str(judge or ""),
                generator=row["model_1"],
                generator_b=row["model_2"],
                dataset="mt-bench",
                status="failed" if failed else "scored",
                query="",
                answer="",
                orders=[] if failed else [{"overall": FASTCHAT_WINNERS[w]} for w in orders],
                tags={"turn": [str(row.get("turn", 1))]},
                rationales={"overall": f"{row.get('g1_judgment', '')} | {row.get('g2_judgment', '')}"},
                error="FastChat's judge gave no readable verdict in an order (error)" if failed else None,
            )
        )
    return verdicts
