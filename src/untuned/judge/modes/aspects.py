"""``multi``: JUST-EVAL's five aspects (helpfulness, clarity, factuality, depth, engagement), each 1-5 (or
N/A) with a one-sentence rationale, in one request per answer."""

from __future__ import annotations

from typing import Any

from untuned.judge.mode import ASPECTS, JudgeMode, aspect_lines, score_schema
from untuned.judge.parse import extract_json, field_of, rationale_of, read_score
from untuned.judge.sections import JUST_EVAL
from untuned.judge.verdicts import AspectVerdict


class AspectsMode(JudgeMode):
    """Scores of 1-5 per aspect; the scores table and the paired comparisons of the report read them."""

    section = JUST_EVAL
    record = AspectVerdict

    def __init__(self, mode: str, version: str, aspects: tuple[str, ...], rubric: dict[str, str] | None = None) -> None:
        super().__init__(mode, version, aspects)
        self.rubric = rubric  # what each aspect means, where the mode words it itself (a plugin's aspects)

    def schema(self) -> dict:
        return score_schema(self.aspects)

    def instructions(self) -> str:
        example = ", ".join(f'"{name}": {{"rationale": "...", "score": "4"}}' for name in self.aspects[:2])
        return (
            "You are given a user request and an answer to it. Rate the answer one aspect at a time, on a scale of "
            '1 to 5. If an aspect cannot apply to this answer, give "N/A".\n\n'
            f"Aspects:\n{aspect_lines(self.aspects, self.rubric)}"
            "\n\nFor each aspect give a one-sentence rationale, then the score. "
            f"Reply with one JSON object with a key per aspect, like {{{example}, ...}}"
        )

    def parse(self, text: str) -> dict[str, Any]:
        data = extract_json(text)
        scores, rationales = {}, {}
        for aspect in self.aspects:
            value = field_of(data, aspect)
            scores[aspect], rationales[aspect] = read_score(value), rationale_of(value)
        return {"scores": scores, "rationales": rationales}


MODE = AspectsMode("multi", "2", ASPECTS)
MODE.summary = (
    "Score each answer 1-5 with a rationale on helpfulness, clarity, factuality, depth and engagement (JUST-EVAL's aspects)."
)
