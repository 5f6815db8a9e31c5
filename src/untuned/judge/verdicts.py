"""Verdict records: what judging an item leaves in the output file, scored or failed, never invented."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from untuned.jsonl import JsonlFile
from untuned.judge.templates import JudgeMode


class Verdict(BaseModel):
    """The judgment of one item (one answer, or two in pairwise mode)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    mode: JudgeMode
    template: str = Field(description="Template name@version.")
    judge: str
    status: Literal["scored", "failed"]
    generator: str | None = None
    generator_b: str | None = Field(None, description="pairwise: the second answer's model.")
    dataset: str | None = None
    tags: dict[str, list[str]] = Field(default_factory=dict)
    query: str
    answer: str
    answer_b: str | None = None
    turns: list[str] = Field(default_factory=list, description="mt-bench: every user turn (query is the first).")
    outputs: list[str] = Field(default_factory=list, description="mt-bench: every answer (answer is the first).")
    reference: list[str] = Field(default_factory=list, description="mt-bench: the reference answers the judge saw.")
    scores: dict[str, int | float | None] = Field(default_factory=dict, description="1-5 per aspect (mt-bench: 1-10 "
                                                  "per turn, turn_1 and turn_2); None = the judge said N/A.")  # fmt: skip
    rationales: dict[str, str] = Field(default_factory=dict)
    unreadable: list[str] = Field(default_factory=list, description="Aspects whose score in an imported file could "
                                  "not be read (left out of scores, counted apart).")
    winners: dict[str, str] = Field(default_factory=dict, description="pairwise: A (first file), B or tie, both orders "
                                    "combined by judge.parse.combine_orders (the preference's rule).")
    orders: list[dict[str, str]] = Field(default_factory=list, description="pairwise: winners as asked in each order, "
                                         "both from the first answer's side (A = the first file's answer).")  # fmt: skip
    preference: float | None = Field(None, description="pairwise: AlpacaEval's encoding of the overall winner, "
                                     "from the first answer's side: 2 = it wins, 1 = the other does, 1.5 = tie; "
                                     "the mean over both orders.")  # fmt: skip
    labels: dict[str, list[str]] = Field(default_factory=dict, description="tag mode: task_types, topics, difficulty.")
    attempts: int = 0
    cached: bool = False
    error: str | None = None
    raw: str | None = Field(None, description="The judge's last reply, kept when it could not be parsed.")
    seconds: float = 0.0

    @property
    def key(self) -> str:
        """One verdict per mode and item: a file may hold several modes (multi and safety of one model)."""
        return f"{self.mode}:{self.id}"

    def settings(self) -> JudgeSettings:
        return JudgeSettings(judge=self.judge, template=self.template)


class JudgeSettings(BaseModel):
    """What must match for verdicts of one mode to belong to the same run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: str
    template: str


class VerdictFile(JsonlFile[Verdict]):
    def __init__(self, path: str | Path) -> None:
        super().__init__(path, Verdict, label="verdict")

    def latest(self) -> dict[str, Verdict]:
        """The last verdict per mode and item (a rerun appends new verdicts for items that had failed)."""
        return {verdict.key: verdict for verdict in self.read(repair=True)}
