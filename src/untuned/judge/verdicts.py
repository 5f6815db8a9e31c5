"""Verdict records: what judging an item leaves in the output file, scored or failed, never invented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from untuned.errors import InvalidInput
from untuned.jsonl import JsonlFile


class VerdictBase(BaseModel):
    """What every verdict holds: the item judged, by whom, and how it went (scored or failed)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    mode: str = Field(description="The judge mode that wrote it (untuned.judge.modes).")
    template: str = Field(description="JudgeMode name@version.")
    judge: str
    status: Literal["scored", "failed"]
    generator: str | None = None
    dataset: str | None = None
    tags: dict[str, list[str]] = Field(default_factory=dict)
    query: str
    answer: str
    rationales: dict[str, str] = Field(default_factory=dict)
    attempts: int = 0
    cached: bool = False
    error: str | None = None
    raw: str | None = Field(None, description="The judge's last reply, kept when it could not be parsed.")
    seconds: float = Field(0.0, description="How long judging the item took.")

    @model_validator(mode="before")
    @classmethod
    def _without_other_modes_empty_fields(cls, data):
        """Files written before the records were split hold every mode's fields, empty where not theirs."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k in cls.model_fields or v not in (None, [], {}, "")}
        return data

    @property
    def key(self) -> str:
        """One verdict per mode and item: a file may hold several modes (multi and safety of one model)."""
        return f"{self.mode}:{self.id}"

    def settings(self) -> JudgeSettings:
        return JudgeSettings(judge=self.judge, template=self.template)


class AspectVerdict(VerdictBase):
    """multi or safety (or a plugin's aspects): a 1-5 score (or N/A) per aspect."""

    scores: dict[str, int | float | None] = Field(default_factory=dict, description="1-5 per aspect; None = N/A.")
    unreadable: list[str] = Field(
        default_factory=list,
        description="Aspects whose score in an imported file could not be read (left out of scores, counted apart).",
    )


class MtBenchVerdict(VerdictBase):
    """mt-bench: a 1-10 score per turn (turn_1, turn_2), the whole conversation kept."""

    scores: dict[str, int | float | None] = Field(default_factory=dict, description="1-10 per turn.")
    turns: list[str] = Field(default_factory=list, description="Every user turn (query is the first).")
    outputs: list[str] = Field(default_factory=list, description="Every answer (answer is the first).")
    reference: list[str] = Field(default_factory=list, description="The reference answers the judge saw.")


class PairwiseVerdict(VerdictBase):
    """pairwise, mt-bench-pair: which of two answers is better, per aspect (or turn), asked in both orders."""

    generator_b: str | None = Field(None, description="The second answer's model.")
    answer_b: str | None = None
    winners: dict[str, str] = Field(
        default_factory=dict,
        description="A (first file), B or tie, both orders combined by judge.outcomes.combine_orders (untuned's rule).",
    )
    orders: list[dict[str, str]] = Field(
        default_factory=list,
        description="Winners as asked in each order, both from the first answer's side (A = the first file's answer).",
    )
    by_position: bool = Field(
        False,
        description="Read from AlpacaEval's annotations: the item's difficulty (for the LC) is that of its row's "
        "position, as AlpacaEval's own code assigns it.",
    )
    preference: float | None = Field(
        None,
        description="AlpacaEval's encoding of the overall winner, from the first answer's side: 2 = it wins, "
        "1 = the other does, 1.5 = tie; the mean over both orders.",
    )


class TagVerdict(VerdictBase):
    """tag: just-eval's labels of the query (task types, topics, difficulty)."""

    labels: dict[str, list[str]] = Field(default_factory=dict, description="task_types, topics, difficulty.")


Verdict = AspectVerdict | MtBenchVerdict | PairwiseVerdict | TagVerdict  # the built-in modes' records


def record_of(mode: str) -> type[VerdictBase]:
    """The record a mode's verdicts are (its module in untuned.judge.modes declares it)."""
    from untuned.judge.modes import modes

    found = modes().get(mode)
    if found is None:
        raise InvalidInput(f"a verdict of the judge mode {mode!r}, which is not installed")
    return found.record


def make_verdict(**fields) -> Verdict:
    """The verdict record for ``fields['mode']``."""
    return record_of(fields["mode"])(**fields)


def parse_verdict(text: str | bytes) -> Verdict:
    """A verdict from one line of a verdict file, as the record of its mode."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("mode"), str):
        raise InvalidInput("not a verdict: no mode")
    return record_of(data["mode"]).model_validate(data)


class JudgeSettings(BaseModel):
    """What must match for verdicts of one mode to belong to the same run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: str
    template: str


class VerdictFile(JsonlFile[VerdictBase]):
    def __init__(self, path: str | Path) -> None:
        super().__init__(path, VerdictBase, label="verdict", parse=parse_verdict)

    def latest(self) -> dict[str, Verdict]:
        """The last verdict per mode and item (a rerun appends new verdicts for items that had failed)."""
        return {verdict.key: verdict for verdict in self.read(repair=True)}
