"""Numbers of a judging report, computed from verdict records.

Reads untuned's verdict files and just-eval's judged files (JSON arrays whose records carry
``parsed_result``). Per model: mean and 95% confidence interval per aspect (normal
approximation, mean ± 1.96·s/√n, s the sample standard deviation), breakdowns by dataset and
tag, answer length, missing counts; per model pair: pairwise wins, ties and losses per aspect.

N/A: a score the judge gave as "N/A" is left out of means by default (``na="skip"``) and counted
as missing. just-eval's own report counts "N/A" as 5 instead; ``na="five"`` reproduces that.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from untuned.errors import DataFileError
from untuned.formats import read_just_eval_judged
from untuned.judge import ASPECTS, Verdict, VerdictFile

NaPolicy = Literal["skip", "five"]
GROUPS = ("dataset", "task_types", "topics", "difficulty")


class AspectStat(BaseModel):
    mean: float | None
    ci: float | None = Field(None, description="Half-width of the 95% confidence interval.")
    n: int
    na: int = Field(0, description="Scores the judge gave as N/A (left out, or counted as 5 with na='five').")


class ModelReport(BaseModel):
    model: str
    items: int
    failed: int
    aspects: dict[str, AspectStat]
    words: float | None = Field(None, description="Mean answer length in words.")
    groups: dict[str, dict[str, dict[str, AspectStat]]] = Field(default_factory=dict)

    @property
    def overall(self) -> float | None:
        means = [s.mean for s in self.aspects.values() if s.mean is not None]
        return sum(means) / len(means) if means else None


class PairwiseStat(BaseModel):
    a: str
    b: str
    aspect: str
    wins: int
    ties: int
    losses: int
    failed: int


class Report(BaseModel):
    na: NaPolicy
    models: list[ModelReport]
    pairwise: list[PairwiseStat]
    tags: dict[str, dict[str, int]] = Field(default_factory=dict, description="tag mode: label counts per kind.")
    tagged: int = Field(0, description="tag mode: queries tagged (failed ones not counted).")


def stat(values: list[int | None], na: NaPolicy) -> AspectStat:
    missing = sum(v is None for v in values)
    scores = [float(v) if v is not None else 5.0 for v in values] if na == "five" else [float(v) for v in values if v is not None]
    n = len(scores)
    if not n:
        return AspectStat(mean=None, n=0, na=missing)
    mean = math.fsum(scores) / n
    if n < 2:
        return AspectStat(mean=mean, n=n, na=missing)
    sd = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / (n - 1))
    return AspectStat(mean=mean, ci=1.96 * sd / math.sqrt(n), n=n, na=missing)


def load_verdicts(path: str | Path) -> list[Verdict]:
    """Verdicts from an untuned verdict file, or from a just-eval judged JSON file."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(path, 0, "file not found")
    with path.open(encoding="utf-8") as handle:
        first = handle.read(4096).lstrip()[:1]
    if first == "[":  # just-eval writes one JSON array; untuned writes JSONL
        return read_just_eval_judged(path)
    return list(VerdictFile(path).latest().values())


def _group_labels(verdict: Verdict, kind: str) -> list[str]:
    if kind == "dataset":
        return [verdict.dataset] if verdict.dataset else []
    return verdict.tags.get(kind, [])


def build_report(verdicts: list[Verdict], *, na: NaPolicy = "skip") -> Report:
    """All the numbers of a report for ``verdicts`` (any mix of models, modes and files)."""
    by_model: dict[str, list[Verdict]] = defaultdict(list)
    pairs: dict[tuple[str, str], list[Verdict]] = defaultdict(list)
    tags: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    tagged = 0
    for verdict in verdicts:
        if verdict.mode == "tag" and verdict.status == "scored":
            tagged += 1
            for kind, labels in verdict.labels.items():
                for label in labels:
                    tags[kind][label] += 1
        if verdict.mode == "pairwise":
            pairs[(verdict.generator or "A", verdict.generator_b or "B")].append(verdict)
        elif verdict.mode in ("multi", "safety"):
            by_model[verdict.generator or "(unknown)"].append(verdict)
    models = []
    for model, group in sorted(by_model.items()):
        scored = [v for v in group if v.status == "scored"]
        aspects = [a for a in (*ASPECTS, "safety") if any(a in v.scores for v in scored)]
        extra = sorted({a for v in scored for a in v.scores} - set(aspects))
        table = {a: stat([v.scores[a] for v in scored if a in v.scores], na) for a in (*aspects, *extra)}
        groups: dict[str, dict[str, dict[str, AspectStat]]] = {}
        for kind in GROUPS:
            members: dict[str, list[Verdict]] = defaultdict(list)
            for v in scored:
                for label in _group_labels(v, kind):
                    members[label].append(v)
            if members:
                groups[kind] = {label: {a: stat([v.scores[a] for v in vs if a in v.scores], na) for a in table}
                                for label, vs in sorted(members.items())}  # fmt: skip
        lengths = [len(v.answer.split()) for v in group]
        models.append(ModelReport(model=model, items=len(group), failed=len(group) - len(scored), aspects=table,
                                  words=sum(lengths) / len(lengths) if lengths else None, groups=groups))  # fmt: skip
    pairwise = []
    for (a, b), group in sorted(pairs.items()):
        scored = [v for v in group if v.status == "scored"]
        for aspect in ASPECTS:
            outcomes = [v.winners.get(aspect) for v in scored if aspect in v.winners]
            pairwise.append(PairwiseStat(a=a, b=b, aspect=aspect, wins=outcomes.count("A"), ties=outcomes.count("tie"),
                                         losses=outcomes.count("B"), failed=len(group) - len(scored)))  # fmt: skip
    counts = {kind: dict(sorted(labels.items(), key=lambda kv: -kv[1])) for kind, labels in sorted(tags.items())}
    return Report(na=na, models=models, pairwise=pairwise, tags=counts, tagged=tagged)
