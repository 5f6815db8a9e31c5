"""A report as Markdown: the tables a reader sees on the terminal and in report.md."""

from __future__ import annotations

from untuned.report.alpaca_eval import SHIPPED
from untuned.report.build import AspectStat, ModelReport, Report
from untuned.report.sections import MtBenchModel


def cell(s: AspectStat | None) -> str:
    if s is None or s.mean is None:
        return "–"
    return f"{s.mean:.2f} ± {s.ci:.2f}" if s.ci is not None else f"{s.mean:.2f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def titled(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """A heading and its table, as Markdown lines with the blank lines around them."""
    return [title, "", table(header, rows), ""]


def aspects_of(report: Report) -> list[str]:
    return list(dict.fromkeys(a for m in report.models for a in m.aspects))


def leaderboard(report: Report) -> list[ModelReport]:
    return sorted(report.models, key=lambda m: -(m.overall or 0.0))


def num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


LC_APPROXIMATE = (
    "LC (approximate): AlpacaEval 2's length-controlled GLM, fitted as AlpacaEval fits it, but on {source} "
    "in place of AlpacaEval's own. For a model the shipped difficulty has not seen (each of the 42 published "
    "models left out of it in turn) it is within 0.33 points of AlpacaEval's published LC on average, 2.08 at "
    "worst (claude; BENCHMARKS.md A1). `report --difficulty df_gamed.csv` (AlpacaEval's own file) gives "
    "AlpacaEval's LC."
)


CONCENTRATION = {"ceiling": "ceiling (top score)", "floor": "floor (bottom score)", "constant": "uninformative"}


def _rate(value: float | None, error: float | None) -> str:
    return num(value, 1) + (f" ± {error:.1f}" if value is not None and error is not None else "")


def pvalue(value: float | None) -> str:
    return "–" if value is None else (f"{value:.2g}" if value < 0.001 else f"{value:.3f}")


def mt_bench_pairwise_markdown(report: Report) -> list[str]:
    rows = [
        [r.model, str(r.win), str(r.loss), str(r.tie), num(r.win_rate, 3), num(r.loss_rate, 3), num(r.win_rate_adjusted, 3)]
        for r in report.mt_bench_pairwise
    ]
    title = "## MT-bench pairwise (FastChat's show_result: a win only when both orders agree, else a tie)"
    return titled(title, ["model", "win", "loss", "tie", "win_rate", "loss_rate", "win_rate_adjusted"], rows)


def mt_bench_markdown(report: Report) -> list[str]:
    parts: list[str] = []
    if not report.mt_bench:
        return parts
    rows = [
        [
            m.model,
            m.judge,
            str(m.questions),
            num(m.turns.get("turn_1")),
            num(m.turns.get("turn_2")),
            num(m.overall),
            str(m.failed),
        ]
        for m in report.mt_bench
    ]
    parts += titled(
        "## MT-bench (1-10; overall = mean of every turn score)",
        ["model", "judge", "questions", "turn 1", "turn 2", "overall", "failed"],
        rows,
    )
    categories = mt_bench_categories(report.mt_bench)
    if categories:
        rows = [[c, *(num(m.categories.get(c)) for m in report.mt_bench)] for c in categories]
        header = ["category", *(m.model for m in report.mt_bench)]
        parts += titled("## MT-bench by category (both turns)", header, rows)
    return parts


def lc_notes(report: Report) -> list[str]:
    """What each LC of the report is: AlpacaEval's (its own df_gamed.csv) or the approximation untuned ships."""
    sources = dict.fromkeys(w.rate.lc_source for w in report.win_rates if w.rate.lc_source)
    return [LC_APPROXIMATE.format(source=s) if s == SHIPPED else f"LC: AlpacaEval's LC, computed with {s}." for s in sources]


def win_rate_markdown(report: Report) -> list[str]:
    parts: list[str] = []
    rows = [
        [
            w.model,
            w.baseline,
            _rate(w.rate.win_rate, w.rate.standard_error),
            _rate(w.rate.length_controlled, w.rate.lc_standard_error),
            num(w.rate.discrete_win_rate, 1),
            f"{w.rate.n_wins} / {w.rate.n_wins_base} / {w.rate.n_draws}",
            str(w.rate.n_total),
            "–" if w.flip_rate is None else f"{w.flip_rate:.0%}",
            f"{num(w.model_chars, 0)} / {num(w.baseline_chars, 0)}",
        ]
        for w in report.win_rates
    ]
    parts += [
        "## Win rate against the baseline",
        "",
        "Win rate (AlpacaEval's): mean preference in percent, draws half, ± its standard error; discrete "
        "(AlpacaEval's): each preference rounded; a win in one order and a tie in the other counts as a win "
        "(preference 1.75). LC ± its standard error, for items that are AlpacaEval's instructions:",
        "",
    ]
    parts += lc_notes(report)
    header = [
        "model",
        "baseline",
        "win rate",
        "LC",
        "discrete",
        "wins / losses / draws",
        "n",
        "order flips",
        "characters (model / baseline)",
    ]
    parts += ["", table(header, rows), ""]
    parts += [
        f"No LC for {w.model} vs {w.baseline}: {w.rate.lc_missing} (AlpacaEval's GLM needs each "
        "instruction's difficulty; a fit of length alone would not be its number)."
        for w in report.win_rates
        if w.rate.lc_missing
    ]
    parts += [""] if any(w.rate.lc_missing for w in report.win_rates) else []
    return parts


def diagnostics_markdown(report: Report) -> list[str]:
    parts: list[str] = []
    rows = [
        [
            d.model,
            d.section,
            d.aspect,
            str(d.n),
            f"{d.most_common_share:.0%} gave {num(d.most_common_score, 0)}",
            num(d.length_spearman),
            CONCENTRATION.get(d.concentration or "", ""),
        ]
        for d in report.diagnostics
    ]
    header = ["model", "set", "aspect", "n", "most common score", "Spearman(length, score)", ""]
    parts += titled("## Judge diagnostics", header, rows)
    return parts


def evaluation_markdown(report: Report, *, compact: bool = False) -> list[str]:
    """MT-bench, win rates, paired comparisons and diagnostics, as Markdown lines."""
    many = len({m for c in report.comparisons for m in (c.a, c.b)}) > 2
    comparisons = comparison_matrix(report) if compact and many else comparison_tables(report)
    parts = mt_bench_markdown(report) + (mt_bench_pairwise_markdown(report) if report.mt_bench_pairwise else [])
    parts += win_rate_markdown(report) if report.win_rates else []
    return parts + comparisons + (diagnostics_markdown(report) if report.diagnostics else [])


COMPARISON_METHOD = (
    "Difference = A − B; 95% paired bootstrap interval of the mean difference; p: the paired sign-flip "
    "permutation test of the mean difference (exact over every flip up to 20 items with a difference, "
    "Monte Carlo beyond), Holm-corrected across aspects, which decides the verdict (never significant while "
    "the interval includes 0, nor when n is too small for any p below 0.05); Wilcoxon signed-rank p "
    "(Pratt, normal approximation) beside it for reference."
)


def verdict_text(r) -> str:
    """The verdict with its n, and why there can be no evidence when n is too small."""
    small = r.min_p is not None and r.min_p >= 0.05
    why = f"; the smallest p possible at this n is {r.min_p:.3g}" if small else ""
    return f"{r.verdict} (n = {r.n}{why})"


def comparison_tables(report: Report) -> list[str]:
    parts: list[str] = []
    for c in report.comparisons:
        rows = [
            [
                r.aspect,
                str(r.n),
                num(r.mean_a),
                num(r.mean_b),
                f"{r.difference:+.2f}",
                f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]",
                pvalue(r.p_value),
                pvalue(r.p_holm),
                pvalue(r.p_wilcoxon),
                verdict_text(r),
            ]
            for r in c.rows
        ]
        parts += [
            f"## {c.a} vs {c.b} ({c.section}, paired on common items)",
            "",
            COMPARISON_METHOD,
            "",
            table(["aspect", "n", c.a, c.b, "difference", "95% CI", "p", "p (Holm)", "Wilcoxon p", f"{c.a} is"], rows),
            "",
        ]
    return parts


def comparison_matrix(report: Report) -> list[str]:
    """Who is significantly better than whom, per section and aspect: one small matrix each."""
    parts = [
        "## Paired comparisons (compact)",
        "",
        "Row vs column: + significantly better, − significantly worse, · no evidence (the full tables, "
        "intervals and p-values are in report.md with --out). " + COMPARISON_METHOD,
        "",
    ]
    mark = {"significantly better": "+", "significantly worse": "−"}
    for section in dict.fromkeys(c.section for c in report.comparisons):
        pairs = [c for c in report.comparisons if c.section == section]
        models = list(dict.fromkeys(m for c in pairs for m in (c.a, c.b)))
        for aspect in dict.fromkeys(r.aspect for c in pairs for r in c.rows):
            cell: dict[tuple[str, str], str] = {}
            for c in pairs:
                for r in c.rows:
                    if r.aspect == aspect:
                        sign = mark.get(r.verdict, "·")
                        cell[(c.a, c.b)] = f"{sign} (n={r.n})"
                        cell[(c.b, c.a)] = f"{ {'+': '−', '−': '+'}.get(sign, '·') } (n={r.n})"
            rows = [[a, *(cell.get((a, b), "" if a == b else "–") for b in models)] for a in models]
            parts += titled(f"### {section}: {aspect}", ["", *models], rows)
    return parts


def scores_markdown(report: Report, *, compare: bool) -> list[str]:
    """The means per model and aspect (a leaderboard with ``compare``), and each model's breakdowns."""
    aspects, parts = aspects_of(report), []
    models = leaderboard(report) if compare else report.models
    if models:
        rows = [
            [
                m.model,
                str(m.items),
                f"{m.overall:.2f}" if m.overall is not None else "–",
                *(cell(m.aspects.get(a)) for a in aspects),
                f"{m.words:.0f}" if m.words else "–",
                str(m.failed),
                str(sum(s.na for s in m.aspects.values())),
            ]
            for m in models
        ]
        header = ["model", "items", "mean", *aspects, "words", "failed", "N/A"]
        parts += titled("## Leaderboard" if compare else "## Scores per model", header, rows)
    for m in report.models:
        for kind, labels in m.groups.items():
            rows = [
                [label, str(max(s.n for s in stats.values()) if stats else 0), *(cell(stats.get(a)) for a in aspects)]
                for label, stats in labels.items()
            ]
            parts += titled(f"## {m.model} by {kind.replace('_', ' ')}", [kind, "n", *aspects], rows)
    return parts


def pairwise_markdown(report: Report) -> list[str]:
    rows = [
        [
            p.a,
            p.b,
            p.aspect,
            str(p.wins),
            str(p.ties),
            str(p.losses),
            str(p.failed),
            f"{p.flips} / {p.both_orders}" if p.both_orders else "–",
        ]
        for p in report.pairwise
    ]
    title = (
        "## Pairwise, untuned's rule (A wins / tie / B wins; both orders asked: a win in one order and a tie in the "
        "other is a win, a win each way a tie, as AlpacaEval's preference counts them; not FastChat's MT-bench rule)"
    )
    return titled(title, ["A", "B", "aspect", "A wins", "ties", "B wins", "failed", "order flips"], rows)


def tags_markdown(report: Report) -> list[str]:
    parts = []
    for kind, labels in report.tags.items():
        rows = [[label, str(count), f"{100 * count / report.tagged:.0f}%"] for label, count in labels.items()]
        title = f"## Tags: {kind.replace('_', ' ')} ({report.tagged} queries)"
        parts += titled(title, [kind, "queries", "share"], rows)
    return parts


def warnings_markdown(report: Report) -> list[str]:
    """Scores that say little, gathered in one short table (not a line each), then the files' faults."""
    parts: list[str] = []
    if report.concentrated:
        meaning = {
            "constant": "no information: left out of the plots",
            "ceiling": "ceiling: differences not resolved",
            "floor": "floor: differences not resolved",
        }
        rows = [
            [
                d.model,
                d.aspect,
                f"{d.most_common_score:g}" if d.most_common_score is not None else "?",
                f"{d.most_common_share:.0%}",
                str(d.n),
                meaning[d.concentration],
            ]
            for d in report.concentrated
        ]
        title = f"## Read first: {len(rows)} score(s) piled on one value"
        parts += titled(title, ["model", "aspect", "score given", "to", "of items", "what it means"], rows)
    parts += [f"> **Warning** — {warning}" for warning in report.file_warnings] + ([""] if report.file_warnings else [])
    return parts


def to_markdown(report: Report, *, compare: bool = False, compact: bool = False) -> str:
    """The whole report as Markdown; ``compact``: many models' comparisons as a matrix (the terminal)."""
    na = (
        "left out (counted as missing; these means are not just-eval's, which counts N/A as 5: --na five gives just-eval's)"
        if report.na == "skip"
        else "counted as 5, as just-eval's report does (these means are just-eval's)"
    )
    parts = ["# Judging report", "", f"Means with 95% confidence intervals (± 1.96 s/√n). N/A scores: {na}.", ""]
    parts += warnings_markdown(report)
    parts += scores_markdown(report, compare=compare)
    parts += pairwise_markdown(report) if report.pairwise else []
    parts += evaluation_markdown(report, compact=compact) + tags_markdown(report) + tables_markdown(report)
    return "\n".join(parts)


def tables_markdown(report: Report) -> list[str]:
    """The sections of their own, each a table of its rows' fields."""
    parts: list[str] = []
    for found in report.tables:
        rows = [[_shown(row.get(key)) for key in found.columns] for row in found.rows]
        parts += titled(f"## {found.title}", found.columns, rows)
    return parts


def _shown(value) -> str:
    return "–" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def mt_bench_categories(models: list[MtBenchModel]) -> list[str]:
    return list(dict.fromkeys(c for m in models for c in m.categories))
