"""Other tools' files, in and out: one module per tool (just-eval, AlpacaEval, FastChat), imported by
the CLI and the report only, never by the domain packages below them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from untuned.generation import GenerationFile
from untuned.rows import as_label_list, native_id

ExportFormat = Literal["just-eval", "alpaca-eval"]


def export_run(path: str | Path, out: str | Path, *, fmt: ExportFormat) -> int:
    """Write a generation run in the input format of just-eval or AlpacaEval (a JSON array); return the count."""
    records = GenerationFile(path).read()
    if fmt == "just-eval":
        rows = [
            {
                "id": native_id(r.id),
                "instruction": r.instruction,
                "output": r.output,
                "generator": r.generator,
                "dataset": r.dataset,
                **{k: as_label_list(v) for k, v in r.meta.items() if k != "dataset"},
            }
            for r in records
        ]
    else:
        rows = [
            {"instruction": r.instruction, "output": r.output, "generator": r.generator, "dataset": r.dataset} for r in records
        ]
    Path(out).write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return len(rows)
