"""Numbers of a judging report, computed from untuned's verdict records (other tools' files become those
records in :mod:`untuned.interop`). Per model: mean and 95% confidence interval per aspect (normal
approximation, mean ± 1.96·s/√n, s the sample standard deviation), breakdowns by dataset and
tag, answer length, missing counts; per model pair: pairwise wins, ties and losses per aspect.

N/A: a score the judge gave as "N/A" is left out of means by default (``na="skip"``) and counted
as missing. just-eval's own report counts "N/A" as 5 instead; ``na="five"`` reproduces that.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, Field

from untuned.judge import ASPECTS, TagVerdict, Verdict
from untuned.judge.modes import modes_of_section
from untuned.judge.outcomes import combine_orders
from untuned.judge.sections import JUST_EVAL, WIN_RATES
from untuned.report.alpaca_eval import Difficulty
from untuned.report.sections import (
    Comparison,
    Diagnostic,
    MtBenchModel,
    MtBenchPairRow,
    Section,
    SectionTable,
    WinRateRow,
    comparisons,
    diagnostics,
    grouped,
    is_mt_bench_pair,
    mt_bench_models,
    mt_bench_pairwise,
    order_flips,
    own_tables,
    win_rates,
)

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
    unreadable: dict[str, int] = Field(default_factory=dict, description="Per aspect, scores in the file that could not be read.")

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
    flips: int = Field(0, description="Items whose two orders disagree (position bias of the judge).")
    both_orders: int = Field(0, description="Items asked in both orders.")


class Report(BaseModel):
    na: NaPolicy
    models: list[ModelReport]
    pairwise: list[PairwiseStat]
    tags: dict[str, dict[str, int]] = Field(default_factory=dict, description="tag mode: label counts per kind.")
    tagged: int = Field(0, description="tag mode: queries tagged (failed ones not counted).")
    mt_bench: list[MtBenchModel] = Field(default_factory=list)
    mt_bench_pairwise: list[MtBenchPairRow] = Field(
        default_factory=list, description="FastChat's show_result pairwise table (MT-bench pairwise verdicts, FastChat's rule)."
    )
    win_rates: list[WinRateRow] = Field(default_factory=list)
    comparisons: list[Comparison] = Field(default_factory=list, description="Paired comparisons (report --compare).")
    diagnostics: list[Diagnostic] = Field(default_factory=list)
    tables: list[SectionTable] = Field(default_factory=list, description="Sections of their own (plugins' judge modes).")

    @cached_property
    def _uninformative(self) -> set[tuple[str, str, str]]:
        return {(d.section, d.model, d.aspect) for d in self.diagnostics if d.uninformative}

    def uninformative(self, section: Section, model: str, aspect: str) -> bool:
        """Whether the judge's scores of ``aspect`` for ``model`` carry no information (see diagnostics)."""
        return (section, model, aspect) in self._uninformative

    @cached_property
    def concentrated(self) -> list[Diagnostic]:
        """The (model, aspect) scores piled on one value: no information (constant), or a ceiling or floor."""
        return [d for d in self.diagnostics if d.concentration in ("constant", "ceiling", "floor")]

    @cached_property
    def warnings(self) -> list[str]:
        """What a reader must know before believing the numbers: scores that carry no information, and the
        faults of the files (:attr:`file_warnings`)."""
        lines = []
        for d in self.concentrated:
            score = f"{d.most_common_score:g}" if d.most_common_score is not None else "?"
            given = f"{d.model}, {d.aspect}: the judge gave {score} to {d.most_common_share:.0%} of {d.n} items"
            if d.concentration == "constant":
                lines.append(f"{given}; these scores carry no information about the answers (no plot drawn).")
            else:
                end = "top" if d.concentration == "ceiling" else "bottom"
                lines.append(
                    f"{given}, the {end} of the scale: a {d.concentration}. The answers are rated as "
                    f"{'good' if end == 'top' else 'bad'} as the scale allows, and differences between models "
                    "cannot be resolved on this aspect."
                )
        return lines + self.file_warnings

    @cached_property
    def file_warnings(self) -> list[str]:
        """Unreadable scores, turns judged twice, a judge that follows the answers' order."""
        lines = []
        for m in self.models:
            for aspect, count in m.unreadable.items():
                lines.append(
                    f"{m.model}, {aspect}: {count} score(s) in the file could not be read (not a number or N/A); "
                    "left out of the means, the rest of the file is read."
                )
        for m in self.mt_bench:
            if m.duplicates:
                lines.append(
                    f"{m.model}: the file judges {m.duplicates} MT-bench turn(s) more than once; every row is "
                    "averaged, as FastChat's show_result does."
                )
        for p in self.pairwise:
            if p.aspect == "overall" and p.both_orders >= 3 and p.flips / p.both_orders >= 0.5:
                lines.append(
                    f"{p.a} vs {p.b}: the two answer orders disagree on {p.flips} of {p.both_orders} items; "
                    "the judge follows the position more than the answers."
                )
        return lines


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


def outcome(verdict: Verdict, aspect: str) -> str | None:
    """A pairwise verdict's winner of ``aspect`` by the win rate's rule (files written before that rule
    kept "tie" for a win and a tie; their two orders are combined again)."""
    if len(verdict.orders) == 2 and all(aspect in order for order in verdict.orders):
        return combine_orders([order[aspect] for order in verdict.orders])[0]
    return verdict.winners.get(aspect)


def _group_labels(verdict: Verdict, kind: str) -> list[str]:
    if kind == "dataset":
        return [verdict.dataset] if verdict.dataset else []
    return verdict.tags.get(kind, [])


def model_report(model: str, group: list[Verdict], na: NaPolicy) -> ModelReport:
    """One model's means per aspect, breakdowns by dataset and tag, answer length and counts."""
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
            groups[kind] = {
                label: {a: stat([v.scores[a] for v in vs if a in v.scores], na) for a in table}
                for label, vs in sorted(members.items())
            }
    lengths = [len(v.answer.split()) for v in group]
    return ModelReport(
        model=model,
        items=len(group),
        failed=len(group) - len(scored),
        aspects=table,
        groups=groups,
        unreadable=dict(Counter(a for v in scored for a in v.unreadable)),
        words=sum(lengths) / len(lengths) if lengths else None,
    )


def pairwise_stats(a: str, b: str, group: list[Verdict]) -> list[PairwiseStat]:
    """Wins, ties and losses of A against B per aspect, by the win rate's rule, and the order flips."""
    scored = [v for v in group if v.status == "scored"]
    stats = []
    for aspect in dict.fromkeys(name for v in scored for name in v.winners):
        outcomes = [outcome(v, aspect) for v in scored if aspect in v.winners]
        flips, both = order_flips(scored, aspect)
        stats.append(
            PairwiseStat(
                a=a,
                b=b,
                aspect=aspect,
                wins=outcomes.count("A"),
                ties=outcomes.count("tie"),
                losses=outcomes.count("B"),
                failed=len(group) - len(scored),
                flips=flips,
                both_orders=both,
            )
        )
    return stats


def tag_counts(verdicts: list[Verdict]) -> tuple[dict[str, dict[str, int]], int]:
    """Label counts per kind over the scored tag verdicts, most common first, and how many were tagged."""
    tagged = [v for v in verdicts if isinstance(v, TagVerdict) and v.status == "scored"]
    counts: dict[str, Counter] = defaultdict(Counter)
    for verdict in tagged:
        for kind, labels in verdict.labels.items():
            counts[kind].update(labels)
    return {kind: dict(found.most_common()) for kind, found in sorted(counts.items())}, len(tagged)


def build_report(
    verdicts: list[Verdict],
    *,
    na: NaPolicy = "skip",
    compare: bool = False,
    pairs: list[tuple[str, str]] | None = None,
    difficulty: Difficulty | None = None,
) -> Report:
    """All the numbers of a report for ``verdicts`` (any mix of models, modes and files); ``compare``
    adds paired comparisons of every two models, or of ``pairs`` only (N/A treated as ``na`` says); ``difficulty``:
    AlpacaEval's own df_gamed.csv read by :func:`read_df_gamed`, in place of the shipped one, for the LC win rate."""
    by_model = grouped(verdicts, modes_of_section(JUST_EVAL), lambda v: v.generator or "(unknown)")
    own_pairs = [v for v in verdicts if not is_mt_bench_pair(v)]
    judged_pairs = grouped(own_pairs, modes_of_section(WIN_RATES), lambda v: (v.generator or "A", v.generator_b or "B"))
    tags, tagged = tag_counts(verdicts)
    return Report(
        na=na,
        models=[model_report(model, group, na) for model, group in sorted(by_model.items())],
        pairwise=[stat for (a, b), group in sorted(judged_pairs.items()) for stat in pairwise_stats(a, b, group)],
        tags=tags,
        tagged=tagged,
        mt_bench=mt_bench_models(verdicts),
        mt_bench_pairwise=mt_bench_pairwise(verdicts),
        win_rates=win_rates(verdicts, difficulty=difficulty),
        diagnostics=diagnostics(verdicts),
        tables=own_tables(verdicts),
        comparisons=comparisons(verdicts, na=na, pairs=pairs) if compare else [],
    )
