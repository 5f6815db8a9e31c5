"""A report as Markdown, CSV (long format, one number per row) and HTML with plots."""

from __future__ import annotations

import base64
import csv
import io
from importlib import resources
from pathlib import Path

from untuned.report.sections import MtBenchModel
from untuned.report.tables import AspectStat, ModelReport, Report


def _cell(s: AspectStat | None) -> str:
    if s is None or s.mean is None:
        return "–"
    return f"{s.mean:.2f} ± {s.ci:.2f}" if s.ci is not None else f"{s.mean:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def aspects_of(report: Report) -> list[str]:
    return list(dict.fromkeys(a for m in report.models for a in m.aspects))


def leaderboard(report: Report) -> list[ModelReport]:
    return sorted(report.models, key=lambda m: -(m.overall or 0.0))


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


LC_ACCURACY = (": over the 42 published models with verdicts, within 0.24 points of AlpacaEval's published LC on "
               "average, worst 1.45 (BENCHMARKS.md); report --difficulty with AlpacaEval's df_gamed.csv uses its own")


CONCENTRATION = {"ceiling": "ceiling (top score)", "floor": "floor (bottom score)", "constant": "uninformative"}


def _rate(value: float | None, error: float | None) -> str:
    return _num(value, 1) + (f" ± {error:.1f}" if value is not None and error is not None else "")


def _p(value: float | None) -> str:
    return "–" if value is None else (f"{value:.2g}" if value < 0.001 else f"{value:.3f}")


def evaluation_markdown(report: Report, *, compact: bool = False) -> list[str]:
    """MT-bench, win rates, paired comparisons and diagnostics, as Markdown lines."""
    parts: list[str] = []
    if report.mt_bench:
        rows = [[m.model, m.judge, str(m.questions), _num(m.turns.get("turn_1")), _num(m.turns.get("turn_2")),
                 _num(m.overall), str(m.failed)] for m in report.mt_bench]  # fmt: skip
        parts += ["## MT-bench (1-10; overall = mean of every turn score)", "",
                  _table(["model", "judge", "questions", "turn 1", "turn 2", "overall", "failed"], rows), ""]  # fmt: skip
        categories = mt_bench_categories(report.mt_bench)
        if categories:
            rows = [[c, *(_num(m.categories.get(c)) for m in report.mt_bench)] for c in categories]
            header = ["category", *(m.model for m in report.mt_bench)]
            parts += ["## MT-bench by category (both turns)", "", _table(header, rows), ""]
    if report.win_rates:
        rows = [[w.model, w.baseline, _rate(w.rate.win_rate, w.rate.standard_error),
                 _rate(w.rate.length_controlled, w.rate.lc_standard_error),
                 _num(w.rate.discrete_win_rate, 1), f"{w.rate.n_wins} / {w.rate.n_wins_base} / {w.rate.n_draws}",
                 str(w.rate.n_total), "–" if w.flip_rate is None else f"{w.flip_rate:.0%}",
                 f"{_num(w.model_chars, 0)} / {_num(w.baseline_chars, 0)}"] for w in report.win_rates]  # fmt: skip
        parts += ["## Win rate against the baseline (AlpacaEval's numbers)", "",
                  "Win rate: mean preference in percent, draws half, ± its standard error; discrete: each preference "
                  "rounded; a win in one order and a tie in the other counts as a win (preference 1.75). "
                  "LC: AlpacaEval 2's length-controlled win rate ± its standard error, for items that are "
                  "AlpacaEval's.", ""]  # fmt: skip
        parts += [f"LC computed with {source}{LC_ACCURACY if 'untuned' in source else ''}."
                  for source in dict.fromkeys(w.rate.lc_source for w in report.win_rates if w.rate.lc_source)]  # fmt: skip
        header = ["model", "baseline", "win rate", "LC", "discrete", "wins / losses / draws", "n", "order flips",
                  "characters (model / baseline)"]  # fmt: skip
        parts += ["", _table(header, rows), ""]
        parts += [f"No LC for {w.model} vs {w.baseline}: {w.rate.lc_missing} (AlpacaEval's GLM needs each "
                  "instruction's difficulty; a fit of length alone would not be its number)." for w in report.win_rates
                  if w.rate.lc_missing]  # fmt: skip
        parts += [""] if any(w.rate.lc_missing for w in report.win_rates) else []
    many = len({m for c in report.comparisons for m in (c.a, c.b)}) > 2
    parts += comparison_matrix(report) if compact and many else comparison_tables(report)
    if report.diagnostics:
        rows = [[d.model, d.section, d.aspect, str(d.n), f"{d.most_common_share:.0%} gave {_num(d.most_common_score, 0)}",
                 _num(d.length_spearman), CONCENTRATION.get(d.concentration or "", "")] for d in report.diagnostics]  # fmt: skip
        parts += ["## Judge diagnostics", "",
                  _table(["model", "set", "aspect", "n", "most common score", "Spearman(length, score)", ""], rows),
                  ""]  # fmt: skip
    return parts


COMPARISON_METHOD = ("Difference = A − B; 95% paired bootstrap interval of the mean difference; p: the bootstrap's, "
                     "Holm-corrected across aspects, which decides the verdict (never significant while the interval "
                     "includes 0); Wilcoxon signed-rank p (Pratt, normal approximation) beside it for reference.")


def comparison_tables(report: Report) -> list[str]:
    parts: list[str] = []
    for c in report.comparisons:
        rows = [[r.aspect, str(r.n), _num(r.mean_a), _num(r.mean_b), f"{r.difference:+.2f}",
                 f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]",
                 _p(r.p_value), _p(r.p_holm), _p(r.p_wilcoxon), r.verdict] for r in c.rows]  # fmt: skip
        parts += [f"## {c.a} vs {c.b} ({c.section}, paired on common items)", "", COMPARISON_METHOD, "",
                  _table(["aspect", "n", c.a, c.b, "difference", "95% CI", "p", "p (Holm)", "Wilcoxon p", f"{c.a} is"], rows),
                  ""]  # fmt: skip
    return parts


def comparison_matrix(report: Report) -> list[str]:
    """Who is significantly better than whom, per section and aspect: one small matrix each."""
    parts = ["## Paired comparisons (compact)", "",
             "Row vs column: + significantly better, − significantly worse, · no evidence (the full tables, "
             "intervals and p-values are in report.md with --out). " + COMPARISON_METHOD, ""]  # fmt: skip
    mark = {"significantly better": "+", "significantly worse": "−"}
    for section in dict.fromkeys(c.section for c in report.comparisons):
        pairs = [c for c in report.comparisons if c.section == section]
        models = list(dict.fromkeys(m for c in pairs for m in (c.a, c.b)))
        for aspect in dict.fromkeys(r.aspect for c in pairs for r in c.rows):
            cell: dict[tuple[str, str], str] = {}
            for c in pairs:
                for r in c.rows:
                    if r.aspect == aspect:
                        cell[(c.a, c.b)] = mark.get(r.verdict, "·")
                        cell[(c.b, c.a)] = {"+": "−", "−": "+"}.get(cell[(c.a, c.b)], "·")
            rows = [[a, *(cell.get((a, b), "" if a == b else "–") for b in models)] for a in models]
            parts += [f"### {section}: {aspect}", "", _table(["", *models], rows), ""]
    return parts


def to_markdown(report: Report, *, compare: bool = False, compact: bool = False) -> str:
    aspects = aspects_of(report)
    parts = ["# Judging report", "",
             f"Means with 95% confidence intervals (± 1.96 s/√n). N/A scores: "
             f"{'left out (counted as missing)' if report.na == 'skip' else 'counted as 5, as just-eval does'}.", ""]  # fmt: skip
    for warning in report.warnings:
        parts.append(f"> **Warning** — {warning}")
    if report.warnings:
        parts.append("")
    models = leaderboard(report) if compare else report.models
    if models:
        title = "## Leaderboard" if compare else "## Scores per model"
        rows = [[m.model, str(m.items), f"{m.overall:.2f}" if m.overall is not None else "–",
                 *(_cell(m.aspects.get(a)) for a in aspects), f"{m.words:.0f}" if m.words else "–",
                 str(m.failed), str(sum(s.na for s in m.aspects.values()))] for m in models]  # fmt: skip
        header = ["model", "items", "mean", *aspects, "words", "failed", "N/A"]
        parts += [title, "", _table(header, rows), ""]
    for m in report.models:
        for kind, labels in m.groups.items():
            rows = [[label, str(max(s.n for s in stats.values()) if stats else 0), *(_cell(stats.get(a)) for a in aspects)]
                    for label, stats in labels.items()]  # fmt: skip
            parts += [f"## {m.model} by {kind.replace('_', ' ')}", "", _table([kind, "n", *aspects], rows), ""]
    if report.pairwise:
        rows = [[p.a, p.b, p.aspect, str(p.wins), str(p.ties), str(p.losses), str(p.failed),
                 f"{p.flips} / {p.both_orders}" if p.both_orders else "–"] for p in report.pairwise]  # fmt: skip
        parts += ["## Pairwise (A wins / tie / B wins; both orders asked: a win in one order and a tie in the other is a win, "
                  "a win each way a tie, as the win rate counts them)", "",
                  _table(["A", "B", "aspect", "A wins", "ties", "B wins", "failed", "order flips"], rows), ""]  # fmt: skip
    parts += evaluation_markdown(report, compact=compact)
    for kind, labels in report.tags.items():
        rows = [[label, str(count), f"{100 * count / report.tagged:.0f}%"] for label, count in labels.items()]
        parts += [
            f"## Tags: {kind.replace('_', ' ')} ({report.tagged} queries)",
            "",
            _table([kind, "queries", "share"], rows),
            "",
        ]
    return "\n".join(parts)


def write_csv(report: Report, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["section", "model", "group", "label", "aspect", "mean", "ci95", "n", "na", "failed"])
        for m in report.models:
            for aspect, s in m.aspects.items():
                writer.writerow(["scores", m.model, "", "", aspect, s.mean, s.ci, s.n, s.na, m.failed])
            writer.writerow(["length", m.model, "", "", "words", m.words, "", m.items, "", ""])
            for kind, labels in m.groups.items():
                for label, stats in labels.items():
                    for aspect, s in stats.items():
                        writer.writerow(["group", m.model, kind, label, aspect, s.mean, s.ci, s.n, s.na, ""])
        for kind, labels in report.tags.items():
            for label, count in labels.items():
                writer.writerow(["tags", "", kind, label, "", "", "", count, "", ""])
        for p in report.pairwise:
            writer.writerow(["pairwise", f"{p.a} vs {p.b}", "", "", p.aspect, "", "", p.wins + p.ties + p.losses, "",
                             p.failed])  # fmt: skip
            writer.writerow(["pairwise-counts", f"{p.a} vs {p.b}", "wins/ties/losses", f"{p.wins}/{p.ties}/{p.losses}",
                             p.aspect, "", "", "", "", ""])  # fmt: skip
            writer.writerow(["pairwise-flips", f"{p.a} vs {p.b}", "flips/both orders", f"{p.flips}/{p.both_orders}",
                             p.aspect, "", "", p.both_orders, "", ""])  # fmt: skip
    if report.mt_bench or report.win_rates or report.comparisons or report.diagnostics:
        with path.with_name(path.stem + "-evaluation.csv").open("w", newline="", encoding="utf-8") as handle:
            write_evaluation_csv(report, csv.writer(handle))


def write_evaluation_csv(report: Report, writer) -> None:
    """MT-bench, win rates, comparisons and diagnostics in long format: one number per row."""
    writer.writerow(["section", "model", "versus", "aspect", "statistic", "value"])
    for m in report.mt_bench:
        for turn, value in m.turns.items():
            writer.writerow(["mt-bench", m.model, "", turn, "mean", value])
        writer.writerow(["mt-bench", m.model, "", "overall", "mean", m.overall])
        for category, value in m.categories.items():
            writer.writerow(["mt-bench-category", m.model, "", category, "mean", value])
    for w in report.win_rates:
        for name, value in w.rate.model_dump().items():
            writer.writerow(["win-rate", w.model, w.baseline, "overall", name, value])
        writer.writerow(["win-rate", w.model, w.baseline, "overall", "flip_rate", w.flip_rate])
    for c in report.comparisons:
        for r in c.rows:
            names = ("n", "mean_a", "mean_b", "difference", "ci_low", "ci_high", "p_value", "p_holm", "p_wilcoxon", "verdict")
            for name in names:
                writer.writerow([f"compare-{c.section}", c.a, c.b, r.aspect, name, getattr(r, name)])
    for d in report.diagnostics:
        for name in ("n", "most_common_score", "most_common_share", "concentration", "uninformative", "length_spearman"):
            writer.writerow([f"diagnostics-{d.section}", d.model, "", d.aspect, name, getattr(d, name)])


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def mt_bench_categories(models: list[MtBenchModel]) -> list[str]:
    return list(dict.fromkeys(c for m in models for c in m.categories))


def _grouped_bars(groups: list[str], bars: dict[str, tuple[list[float], list[float] | None]], *, top: float, label: str,
                  rotation: int = 0) -> str:  # fmt: skip
    """A PNG of bars grouped by ``groups``, one colour per series (name → values and error bars)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6, 0.65 * len(groups) * max(1, len(bars))), 3.8))
    width = 0.8 / len(bars)
    for i, (name, (values, errors)) in enumerate(bars.items()):
        ax.bar(np.arange(len(groups)) + i * width, values, width, yerr=errors, capsize=3 if errors else 0, label=name)
    ax.set_xticks(np.arange(len(groups)) + width * (len(bars) - 1) / 2, groups, rotation=rotation)
    ax.set_ylim(0, top * 1.05)
    ax.set_ylabel(label)
    ax.legend(fontsize=8)
    return _png(fig)


def plots(report: Report) -> dict[str, str]:
    """Base64 PNGs: per-aspect bars with CIs, and a heatmap per model and tag kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    images = {}
    # an aspect is drawn for the models whose scores of it carry information; none at all: no chart
    aspects = [a for a in aspects_of(report) if any(not report.uninformative("just-eval", m.model, a) for m in report.models)]
    if report.models and aspects:
        bars = {}
        for m in report.models:
            shown = [a in m.aspects and not report.uninformative("just-eval", m.model, a) for a in aspects]
            bars[m.model] = ([m.aspects[a].mean or 0 if ok else 0 for a, ok in zip(aspects, shown)],
                             [m.aspects[a].ci or 0 if ok else 0 for a, ok in zip(aspects, shown)])  # fmt: skip
        images["Scores per aspect"] = _grouped_bars(aspects, bars, top=5, label="mean score (1-5)")
    informative = [m for m in report.mt_bench
                   if m.categories and not all(report.uninformative("mt-bench", m.model, t) for t in m.turns)]  # fmt: skip
    if informative:
        categories = mt_bench_categories(informative)
        bars = {m.model: ([m.categories.get(c) or 0 for c in categories], None) for m in informative}
        images["MT-bench by category"] = _grouped_bars(categories, bars, top=10, label="MT-bench score (1-10)", rotation=20)
    for m in report.models:
        for kind, labels in m.groups.items():
            if kind == "dataset" and len(labels) < 2:
                continue
            grid = np.array([[labels[label][a].mean if a in labels[label] and labels[label][a].mean is not None
                              and not report.uninformative("just-eval", m.model, a) else np.nan
                              for a in m.aspects] for label in labels])  # fmt: skip
            if np.isnan(grid).all():
                continue
            fig, ax = plt.subplots(figsize=(1.2 * len(m.aspects) + 2, 0.4 * len(labels) + 1.5))
            image = ax.imshow(grid, vmin=1, vmax=5, cmap="RdYlGn", aspect="auto")
            ax.set_xticks(range(len(m.aspects)), list(m.aspects), rotation=30)
            ax.set_yticks(range(len(labels)), list(labels))
            for (r, c), value in np.ndenumerate(grid):
                if not np.isnan(value):
                    ax.text(c, r, f"{value:.1f}", ha="center", va="center", fontsize=8)
            fig.colorbar(image, ax=ax)
            ax.set_title(f"{m.model}: {kind.replace('_', ' ')}")
            images[f"{m.model} by {kind}"] = _png(fig)
    return images


def to_html(report: Report, *, compare: bool = False) -> str:
    from jinja2 import Environment, select_autoescape

    source = resources.files("untuned.report").joinpath("report.html").read_text(encoding="utf-8")
    template = Environment(autoescape=select_autoescape(default=True)).from_string(source)
    models = leaderboard(report) if compare else report.models
    return template.render(report=report, models=models, aspects=aspects_of(report), cell=_cell, images=plots(report),
                           compare=compare, num=_num, p=_p, comparison_method=COMPARISON_METHOD,
                           lc_sources=list(dict.fromkeys(w.rate.lc_source for w in report.win_rates if w.rate.lc_source)),
                           cats=mt_bench_categories(report.mt_bench))  # fmt: skip
