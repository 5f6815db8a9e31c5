"""The evaluation sections of a report, built from verdicts: MT-bench scores, win rates against a
baseline (AlpacaEval's numbers, its length-controlled one included), paired comparisons of two models, and
the judge's diagnostics.

MT-bench numbers follow FastChat's ``show_result``: the mean of each turn, and "overall" the mean
of every turn score (so a question whose turn 2 failed still counts its turn 1), every row counted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator, Sequence
from itertools import combinations
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from untuned.judge import MtBenchVerdict, PairwiseVerdict, Verdict
from untuned.judge.mode import TURNS
from untuned.judge.modes import modes_of_section, own_sections, section_of
from untuned.judge.outcomes import fastchat_outcome
from untuned.judge.sections import MT_BENCH, MT_BENCH_PAIRWISE, WIN_RATES, ReportSection
from untuned.report.alpaca_eval import Difficulty, length_controlled, shipped
from untuned.stats import (
    AspectDiagnostics,
    PairedComparison,
    WinRate,
    compare_aspects,
    diagnose,
    win_rate,
)

Section = str  # a ReportSection's name (untuned.judge.sections)
Key = TypeVar("Key", bound=Hashable)


class MtBenchModel(BaseModel):
    model: str
    judge: str
    questions: int
    failed: int
    turns: dict[str, float | None] = Field(description="Mean score per turn (turn_1, turn_2), 1-10.")
    turn_counts: dict[str, int]
    overall: float | None = Field(description="Mean of every turn score.")
    categories: dict[str, float | None] = Field(default_factory=dict, description="Mean of both turns per category.")
    duplicates: int = Field(0, description="Rows judging a turn already judged (kept and averaged, as FastChat does).")


class MtBenchPairRow(BaseModel):
    """One model's line of FastChat's ``show_result --mode pairwise-all``: every MT-bench pairwise verdict it
    is in, counted by FastChat's rule (a win only when both orders agree; failed ones left out)."""

    model: str
    win: int
    loss: int
    tie: int
    win_rate: float
    loss_rate: float
    win_rate_adjusted: float = Field(description="(win + tie / 2) / all, each tie half a win and half a loss.")


class WinRateRow(BaseModel):
    model: str
    baseline: str
    judge: str
    rate: WinRate
    flip_rate: float | None = Field(None, description="Share of items whose two orders disagree on the overall winner.")
    model_chars: float | None = None
    baseline_chars: float | None = None


class Comparison(BaseModel):
    """Model A against model B on the items both were judged on (one section's aspects)."""

    section: Section
    a: str
    b: str
    rows: list[PairedComparison]


class SectionTable(BaseModel):
    """A table of a section of its own (a plugin's mode of a new shape): its rows as the section made them."""

    section: str
    title: str
    rows: list[dict[str, Any]]

    @property
    def columns(self) -> list[str]:
        """Every row's keys, in the order they first appear: the table's header in Markdown, HTML and CSV."""
        return list(dict.fromkeys(key for row in self.rows for key in row))


class Diagnostic(AspectDiagnostics):
    model: str
    section: Section


def grouped(verdicts: list[Verdict], modes: tuple[str, ...], key: Callable[[Verdict], Key]) -> dict[Key, list[Verdict]]:
    """The verdicts of ``modes``, grouped by ``key`` (a model, or a model and its baseline), in order."""
    groups: dict[Key, list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        if verdict.mode in modes:
            groups[key(verdict)].append(verdict)
    return groups


def own_tables(verdicts: list[Verdict]) -> list[SectionTable]:
    """The tables of the sections that draw their own (:attr:`ReportSection.rows`), from their modes' verdicts."""
    tables = []
    for section in own_sections():
        feeding = modes_of_section(section)
        mine = [v for v in verdicts if v.mode in feeding]
        rows = [r.model_dump() if isinstance(r, BaseModel) else dict(r) for r in section.rows(mine)] if mine else []
        if rows:
            tables.append(SectionTable(section=section.name, title=section.title or section.name, rows=rows))
    return tables


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def mt_bench_models(verdicts: list[Verdict]) -> list[MtBenchModel]:
    """FastChat's ``show_result`` numbers per model: the mean of every turn-1 row, of every turn-2 row,
    and of every row; a file that judged a question's turn twice has both rows averaged, as FastChat
    does (``duplicates`` says how many such rows there are)."""
    by_model = grouped(verdicts, modes_of_section(MT_BENCH), lambda v: v.generator or "(unknown)")
    models = []
    for model, group in sorted(by_model.items()):
        scored = [v for v in group if v.scores]  # a verdict whose turn 2 failed keeps its turn 1, as FastChat does
        turns = {t: [float(v.scores[t]) for v in scored if v.scores.get(t) is not None] for t in TURNS}
        categories: dict[str, list[float]] = defaultdict(list)
        for v in scored:
            for category in v.tags.get("category", []):
                categories[category] += [float(s) for s in v.scores.values() if s is not None]
        seen = [(v.id, t) for v in scored for t, s in v.scores.items() if s is not None]
        questions = {v.id for v in group}
        models.append(
            MtBenchModel(
                model=model,
                judge=", ".join(sorted({v.judge for v in group})),
                questions=len(questions),
                failed=len(questions - {v.id for v in group if v.status == "scored"}),
                turns={t: _mean(values) for t, values in turns.items()},
                turn_counts={t: len(values) for t, values in turns.items()},
                overall=_mean([s for values in turns.values() for s in values]),
                categories={c: _mean(values) for c, values in sorted(categories.items())},
                duplicates=len(seen) - len(set(seen)),
            )
        )
    return models


def is_mt_bench_pair(verdict: Verdict) -> bool:
    """A pairwise verdict on MT-bench: counted by FastChat's rule, in its table, not in the win rates."""
    if not isinstance(verdict, PairwiseVerdict):
        return False
    return section_of(verdict.mode) == MT_BENCH_PAIRWISE


def mt_bench_pairwise(verdicts: list[Verdict]) -> list[MtBenchPairRow]:
    """FastChat's show_result pairwise table over the MT-bench pairwise verdicts, one judgment per turn (both
    models of every pair get a line, as in its pairwise-all mode; a verdict asked in one order only counts
    that order)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"win": 0, "loss": 0, "tie": 0})
    for v in verdicts:
        if not is_mt_bench_pair(v) or v.status != "scored":
            continue
        a, b = v.generator or "A", v.generator_b or "B"  # type: ignore[union-attr]
        for aspect in dict.fromkeys(k for order in v.orders for k in order) or v.winners:  # type: ignore[union-attr]
            winners = [order[aspect] for order in v.orders if aspect in order] or [v.winners[aspect]]  # type: ignore[union-attr]
            result = fastchat_outcome(winners)
            if result == "tie":
                counts[a]["tie"] += 1
                counts[b]["tie"] += 1
            else:
                winner, loser = (a, b) if result == "A" else (b, a)
                counts[winner]["win"] += 1
                counts[loser]["loss"] += 1
    rows = []
    for model, c in sorted(counts.items()):
        total = c["win"] + c["loss"] + c["tie"]
        rows.append(
            MtBenchPairRow(
                model=model,
                **c,
                win_rate=c["win"] / total,
                loss_rate=c["loss"] / total,
                win_rate_adjusted=(c["win"] + 0.5 * c["tie"]) / total,
            )
        )
    return sorted(rows, key=lambda r: -r.win_rate_adjusted)


def difficulties(group: list[Verdict], source: Difficulty) -> list[float] | None:
    """Each verdict's instruction difficulty, or None unless every item is one of AlpacaEval's.

    Verdicts read from AlpacaEval's annotation files take the difficulty of their row position, as
    AlpacaEval's own code assigns it (``index`` after ``reset_index``; a file with missing rows shifts
    it, and so does AlpacaEval); other verdicts that of their instruction's text."""
    found = []
    for verdict in group:
        if verdict.by_position or not source.by_instruction:
            position = int(verdict.id) if verdict.id.isdigit() else len(source.by_position)
            value = source.by_position[position] if position < len(source.by_position) else None
        else:
            value = source.by_instruction.get(verdict.query)
        if value is None:
            return None
        found.append(value)
    return found


def order_flips(verdicts: list[Verdict], aspect: str) -> tuple[int, int]:
    """Pairwise verdicts whose two answer orders disagree on ``aspect``, and how many were asked in both."""
    both = [v for v in verdicts if len(v.orders) == 2 and aspect in v.orders[0] and aspect in v.orders[1]]
    return sum(v.orders[0][aspect] != v.orders[1][aspect] for v in both), len(both)


def win_rates(verdicts: list[Verdict], *, difficulty: Difficulty | None = None) -> list[WinRateRow]:
    """Win rate of each model (the first answer) against each baseline, from verdicts with a preference.

    The length-controlled win rate is AlpacaEval's GLM when every item is an AlpacaEval instruction
    (``difficulty``: AlpacaEval's own df_gamed.csv; None: the difficulty untuned ships). For other
    items there is none, and ``lc_missing`` says why: without the instruction difficulty a length fit
    is not AlpacaEval's number, and lets length explain too much (an answer that is always shorter
    than the baseline's makes length and the model's strength one and the same)."""
    source = difficulty or shipped()
    judged = [v for v in verdicts if isinstance(v, PairwiseVerdict) and v.answer_b is not None and not is_mt_bench_pair(v)]
    pairs = grouped(judged, modes_of_section(WIN_RATES), lambda v: (v.generator or "A", v.generator_b or "B"))
    rows = []
    for (model, baseline), group in sorted(pairs.items()):
        # as in AlpacaEval, an item the judge gave no preference is left out of the win rate and its error, and
        # kept in the LC's length spread and its mean prediction (its answers were compared)
        preferences = [v.preference if v.status == "scored" else None for v in group]  # type: ignore[union-attr]
        if not any(p is not None for p in preferences):
            continue
        rate = win_rate(preferences)
        model_lengths = [len(v.answer) for v in group]
        baseline_lengths = [len(v.answer_b or "") for v in group]  # type: ignore[union-attr]
        d = difficulties(group, source)
        if d is None:
            rate.lc_missing = "the items are not all AlpacaEval instructions, so they have no difficulty"
        elif len(group) < 10:  # as AlpacaEval: rows, not preferences (a row without one still has its lengths)
            rate.lc_missing = "fewer than 10 rows"
        else:
            fit = length_controlled(preferences, model_lengths, baseline_lengths, d, gamed=source.gamed)
            rate.length_controlled, rate.lc_standard_error, rate.lc_source = fit.win_rate, fit.standard_error, source.source
        flips, both = order_flips(group, "overall")
        rows.append(
            WinRateRow(
                model=model,
                baseline=baseline,
                judge=", ".join(sorted({v.judge for v in group})),
                rate=rate,
                flip_rate=flips / both if both else None,
                model_chars=_mean(model_lengths),
                baseline_chars=_mean(baseline_lengths),
            )
        )
    return rows


def _scores(verdicts: list[Verdict], na: str = "skip") -> Iterator[tuple[ReportSection, str, str, float, Verdict]]:
    """(section, model, aspect, score, verdict) for every score of the scored verdicts; N/A left out, or
    (``na="five"``, just-eval's way) counted as 5."""
    for verdict in verdicts:
        section = section_of(verdict.mode)
        if section is None or not section.scored:
            continue
        if verdict.status != "scored" and not (section.partial and verdict.scores):
            continue
        for aspect, score in verdict.scores.items():
            if score is None and na == "five" and section.na_as_five:
                score = 5
            if score is not None:
                yield section, verdict.generator or "(unknown)", aspect, float(score), verdict


def _score_tables(verdicts: list[Verdict], na: str) -> dict[Section, dict[str, dict[str, dict[str, float]]]]:
    """section → model → aspect → id → score; an item judged more than once gets the mean of its scores, as
    FastChat's show_result averages every row (its means count each row; a paired comparison pairs items)."""
    found: dict[Section, dict[str, dict[str, dict[str, list[float]]]]] = defaultdict(dict)
    for section, model, aspect, score, verdict in _scores(verdicts, na):
        found[section.name].setdefault(model, {}).setdefault(aspect, {}).setdefault(verdict.id, []).append(score)
    return {
        section: {
            model: {aspect: {i: sum(v) / len(v) for i, v in items.items()} for aspect, items in aspects.items()}
            for model, aspects in models.items()
        }
        for section, models in found.items()
    }


def comparisons(
    verdicts: list[Verdict], *, alpha: float = 0.05, na: str = "skip", pairs: list[tuple[str, str]] | None = None
) -> list[Comparison]:
    """Every pair of models judged on common items (or only ``pairs``), per section: a paired comparison
    per aspect, Holm-corrected across the aspects of the pair (models in the order they first appear);
    N/A scores as the report's means treat them (``na``)."""
    order = list(dict.fromkeys(v.generator or "(unknown)" for v in verdicts))
    result = []
    for section, models in _score_tables(verdicts, na).items():
        names = sorted(models, key=order.index)
        chosen = combinations(names, 2) if pairs is None else [(a, b) for a, b in pairs if a in models and b in models]
        for a, b in chosen:
            scores = {}
            for aspect in dict.fromkeys([*models[a], *models[b]]):
                common = sorted(set(models[a].get(aspect, {})) & set(models[b].get(aspect, {})))
                scores[aspect] = ([models[a][aspect][i] for i in common], [models[b][aspect][i] for i in common])
            rows = compare_aspects(scores, alpha=alpha)
            if rows:
                result.append(Comparison(section=section, a=a, b=b, rows=rows))
    return result


def _words(verdict: Verdict, aspect: str) -> int:
    if isinstance(verdict, MtBenchVerdict) and aspect in TURNS and TURNS.index(aspect) < len(verdict.outputs):
        return len(verdict.outputs[TURNS.index(aspect)].split())
    return len(verdict.answer.split())


def diagnostics(verdicts: list[Verdict]) -> list[Diagnostic]:
    """Per model and aspect: is every item given (nearly) the same score, and does the score follow length?"""
    grouped: dict[tuple[ReportSection, str, str], list[tuple[float, int]]] = defaultdict(list)
    for section, model, aspect, score, verdict in _scores(verdicts):
        has_text = bool(verdict.answer or (isinstance(verdict, MtBenchVerdict) and verdict.outputs))
        grouped[(section, model, aspect)].append((score, _words(verdict, aspect) if has_text else -1))
    result = []
    for (section, model, aspect), pairs in sorted(grouped.items(), key=lambda entry: (entry[0][0].name, *entry[0][1:])):
        scores = [s for s, _ in pairs]
        lengths = [n for _, n in pairs] if all(n >= 0 for _, n in pairs) else [0] * len(pairs)
        found = diagnose(aspect, scores, lengths, top=section.top)
        result.append(Diagnostic(model=model, section=section.name, **found.model_dump()))
    return result
