"""AlpacaEval's ``annotations.json`` as pairwise verdicts."""

from __future__ import annotations

from pathlib import Path

from untuned.errors import DataFileError
from untuned.judge.verdicts import Verdict, make_verdict
from untuned.rows import Rows, read_rows
from untuned.stats import read_preference


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
        verdicts.append(
            make_verdict(
                id=str(row.get("id", index)),
                mode="pairwise",
                template=f"alpaca-eval:{row.get('annotator', '')}",
                judge=str(row.get("annotator", "")),
                status="scored" if usable else "failed",
                generator=str(row.get("generator_2", "model")),
                generator_b=str(row.get("generator_1", "baseline")),
                dataset=row.get("dataset"),
                query=str(row.get("instruction", "")),
                answer=row["output_2"],
                answer_b=row["output_1"],
                preference=preference,
                by_position=True,
                winners={"overall": winner} if usable else {},
            )
        )
    return verdicts
