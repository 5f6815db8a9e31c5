"""Other tools' files, in and out: one module per tool (just-eval, AlpacaEval, FastChat), imported by the
command line, the pipeline and experiments, never by the domain packages below them; :func:`load_verdicts`
reads any judged file, whoever wrote it, as untuned's verdict records."""

from __future__ import annotations

import json
import time
import uuid
from itertools import chain
from pathlib import Path
from typing import Literal

from untuned.errors import DataFileError, UntunedError
from untuned.generation import GenerationFile, GenerationRecord
from untuned.interop.alpaca_eval import read_alpaca_eval_annotations
from untuned.interop.fastchat import read_fastchat_judgments, read_fastchat_pair_judgments
from untuned.interop.just_eval import read_just_eval_judged
from untuned.judge import Verdict, VerdictFile
from untuned.rows import as_label_list, native_id, read_rows

ExportFormat = Literal["just-eval", "alpaca-eval", "fastchat"]


def fastchat_answers(records: list[GenerationRecord], model_id: str | None = None) -> list[dict]:
    """An MT-bench run as FastChat's ``model_answer/<model>.jsonl`` rows, which its ``gen_judgment.py``
    grades: question_id (an integer where the id is one), a fresh answer_id, model_id, one choice
    holding every turn's answer, and a timestamp."""
    rows = []
    for r in records:
        rows.append(
            {
                "question_id": native_id(r.id),
                "answer_id": uuid.uuid4().hex[:22],
                "model_id": model_id or r.generator,
                "choices": [{"index": 0, "turns": list(r.outputs)}],
                "tstamp": time.time(),
            }
        )
    return rows


def _fastchat_rows(path, records: list, model_id: str | None) -> tuple[list[dict], bool]:
    if any(r.dataset != "mt-bench" for r in records):
        raise UntunedError(f"{path}: FastChat's answer files are for MT-bench runs (untuned generate mt-bench)")
    return fastchat_answers(records, model_id), True


def _just_eval_rows(path, records: list, model_id: str | None) -> tuple[list[dict], bool]:
    keys = ("instruction", "output", "generator", "dataset")
    rows = [
        {
            "id": native_id(r.id),
            **{k: getattr(r, k) for k in keys},
            **{k: as_label_list(v) for k, v in r.meta.items() if k != "dataset"},
        }
        for r in records
    ]
    return rows, False


def _alpaca_eval_rows(path, records: list, model_id: str | None) -> tuple[list[dict], bool]:
    return [
        {"instruction": r.instruction, "output": r.output, "generator": r.generator, "dataset": r.dataset} for r in records
    ], False


# each export format: its rows, and whether they are written as JSONL (else one JSON array)
EXPORTERS = {"fastchat": _fastchat_rows, "just-eval": _just_eval_rows, "alpaca-eval": _alpaca_eval_rows}


def export_run(path: str | Path, out: str | Path, *, fmt: ExportFormat, model_id: str | None = None) -> int:
    """Write a generation run in the input format of just-eval or AlpacaEval (a JSON array), or of
    FastChat (JSONL, an MT-bench run); return the count."""
    rows, jsonl = EXPORTERS[fmt](path, GenerationFile(path).read(), model_id)
    if jsonl:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        text = json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    Path(out).write_text(text, encoding="utf-8")
    return len(rows)


def load_verdicts(path: str | Path) -> list[Verdict]:
    """Verdicts from an untuned verdict file, a just-eval judged JSON file, AlpacaEval's
    ``annotations.json``, or FastChat's MT-bench ``model_judgment/*_single.jsonl`` and ``*_pair.jsonl``."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(path, 0, "file not found")
    rows = read_rows(path)
    head = next(rows, None)
    first = head[1] if head else {}
    if "output_1" in first and "preference" in first:
        return read_alpaca_eval_annotations(path, chain([head], rows))
    if "parsed_result" in first or "output_cand" in first:
        return read_just_eval_judged(path, chain([head], rows))
    if "g1_winner" in first and "model_1" in first:
        return read_fastchat_pair_judgments(path, chain([head], rows))
    if isinstance(first.get("judge"), list) and "turn" in first:
        return read_fastchat_judgments(path, chain([head], rows))
    return list(VerdictFile(path).latest().values())
