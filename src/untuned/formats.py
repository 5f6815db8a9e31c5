"""Files of other tools, in and out: generic JSON / JSONL rows, just-eval and AlpacaEval answer files
(import and export), tagged query files, answer files of any of these kinds, and just-eval's judged files.

Every reader names the file and line of a malformed row (:class:`DataFileError`).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from untuned.answers import AnswerItem, tags_from_meta
from untuned.errors import DataFileError, ReplyError, UntunedError
from untuned.generation import GenerationFile, GenerationRecord
from untuned.judge.parse import read_preference, read_score
from untuned.judge.verdicts import Verdict

ExportFormat = Literal["just-eval", "alpaca-eval"]


# --- generic rows ------------------------------------------------------------------------------


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


# --- answers ----------------------------------------------------------------------------------


def import_answers(path: str | Path, *, generator: str | None = None) -> list[GenerationRecord]:
    """Another tool's answers (just-eval or AlpacaEval files, any JSON/JSONL of ``id, instruction, output``)
    as generation records."""
    name = generator or Path(path).stem
    records = []
    for number, row in read_rows(path):
        if not isinstance(row.get("output"), str) or not isinstance(row.get("instruction"), str):
            raise DataFileError(path, number, "fields 'instruction' and 'output' must be strings")
        records.append(
            GenerationRecord(
                id=str(row.get("id", len(records))), dataset=row.get("dataset"), turns=[row["instruction"]],
                outputs=[row["output"]], generator=generator or row.get("generator") or name, model=f"imported:{name}",
                prompt_name="", prompt_hash="", sampling={}, prompt_tokens=[None], completion_tokens=[0],
                finish_reasons=["stop"], seconds=0.0,
            )
        )  # fmt: skip
    return records


def export_run(path: str | Path, out: str | Path, *, fmt: ExportFormat) -> int:
    """Write a generation run in the input format of just-eval or AlpacaEval (a JSON array); return the count."""
    records = GenerationFile(path).read()
    if fmt == "just-eval":
        rows = [{"id": native_id(r.id), "instruction": r.instruction, "output": r.output, "generator": r.generator,
                 "dataset": r.dataset, **{k: as_label_list(v) for k, v in r.meta.items() if k != "dataset"}}
                for r in records]  # fmt: skip
    else:
        rows = [{"instruction": r.instruction, "output": r.output, "generator": r.generator, "dataset": r.dataset}
                for r in records]  # fmt: skip
    Path(out).write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return len(rows)


def read_tags(path: str | Path) -> dict[str, dict[str, Any]]:
    """Rows of a tagged query file (just-eval's) by id: dataset and tag fields."""
    return {str(row.get("id", number)): row for number, row in read_rows(path)}


def generation_records(path: str | Path, rows: Rows, *, what: str = "a generation record") -> list[GenerationRecord]:
    """The records of an ``untuned generate`` run from its rows; a row that is not one is named as not ``what``."""
    records = []
    for number, row in rows:
        try:
            records.append(GenerationRecord.model_validate(row))
        except ValueError as exc:
            raise DataFileError(path, number, f"not {what}: {str(exc).splitlines()[0]}") from exc
    return records


def read_answers(path: str | Path, *, tags: dict[str, dict[str, Any]] | None = None) -> list[AnswerItem]:
    """Answers from an ``untuned generate`` run, just-eval / AlpacaEval output, or any JSONL of
    ``id, instruction, output``; tags and dataset joined by id from ``tags`` where given."""
    rows = list(read_rows(path))
    records = generation_records(path, rows) if rows and "outputs" in rows[0][1] else import_answers(path)
    items = []
    for record in records:
        joined = (tags or {}).get(record.id, {})
        meta = {**joined, **record.meta}
        items.append(AnswerItem(id=record.id, query=record.turns[0], answer=record.outputs[0],
                                dataset=record.dataset or joined.get("dataset"), tags=tags_from_meta(meta),
                                generator=record.generator))  # fmt: skip
    return items


# --- judged files ---------------------------------------------------------------------------------


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
        return Verdict(**base, mode="safety" if "safety" in mode else "multi", status="failed", raw=str(row.get("result")))
    scores, unreadable = {}, []
    for aspect, result in parsed.items():
        try:
            scores[aspect] = read_score(result)
        except ReplyError:  # one unreadable score costs that aspect of that item, not the file
            unreadable.append(aspect)
    rationales = {a: str(r.get("rationale", "")) for a, r in parsed.items() if isinstance(r, dict)}
    mode = "safety" if set(scores) | set(unreadable) == {"safety"} else "multi"
    return Verdict(**base, mode=mode, status="scored", scores=scores, rationales=rationales, unreadable=unreadable)


Rows = Iterable[tuple[int, dict[str, Any]]]


def read_just_eval_judged(path: str | Path, rows: Rows | None = None) -> list[Verdict]:
    """Verdicts from a judged file of just-eval (a JSON array whose records carry ``parsed_result``);
    ``rows``: the file's rows when the caller has read them already (as :func:`read_rows` gives them)."""
    rows = read_rows(path) if rows is None else rows
    return [_verdict_from_just_eval(row, index, Path(path)) for index, (_, row) in enumerate(rows)]


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
        verdicts.append(Verdict(
            id=qid, mode="mt-bench", template="fastchat:single", judge=str(judge[0]), generator=str(row.get("model")),
            dataset="mt-bench", status="scored" if scored else "failed", query="", answer="",
            scores={turn: int(score) if score.is_integer() else score} if scored else {},
            rationales={turn: str(row.get("judgment", ""))}, tags={"category": [category]} if category else {},
            error=None if scored else "FastChat's judge gave no readable score (-1)",
        ))  # fmt: skip
    return verdicts


def read_alpaca_eval_annotations(path: str | Path, rows: Rows | None = None) -> list[Verdict]:
    """Pairwise verdicts from AlpacaEval's ``annotations.json``: ``output_2`` is the model's answer and
    ``output_1`` the baseline's; ``preference`` 1-2 (2 = the model's preferred; 0 or 1.5 = draw), possibly
    as a string. A row with no usable preference becomes a failed verdict, left out of the win rate."""
    verdicts = []
    for index, (number, row) in enumerate(read_rows(path) if rows is None else rows):
        for key in ("output_1", "output_2"):
            if not isinstance(row.get(key), str):
                raise DataFileError(path, number, f"row {index}: field {key!r} must be a string")
        preference = read_preference(row.get("preference"))
        usable = preference is not None
        winner = "tie" if preference == 1.5 else ("A" if usable and preference > 1.5 else "B")
        verdicts.append(Verdict(
            id=str(row.get("id", index)), mode="pairwise", template=f"alpaca-eval:{row.get('annotator', '')}",
            judge=str(row.get("annotator", "")), status="scored" if usable else "failed",
            generator=str(row.get("generator_2", "model")), generator_b=str(row.get("generator_1", "baseline")),
            dataset=row.get("dataset"), query=str(row.get("instruction", "")), answer=row["output_2"],
            answer_b=row["output_1"], preference=preference,
            winners={"overall": winner} if usable else {},
        ))  # fmt: skip
    return verdicts
