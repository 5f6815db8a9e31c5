"""A report as CSV (long format, one number per row) and HTML with plots (its Markdown: report/markdown.py)."""

from __future__ import annotations

import base64
import csv
import io
from importlib import resources
from pathlib import Path

from untuned.report.build import Report
from untuned.report.markdown import COMPARISON_METHOD, aspects_of, cell, lc_notes, leaderboard, mt_bench_categories, num, pvalue


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
            writer.writerow(["pairwise", f"{p.a} vs {p.b}", "", "", p.aspect, "", "", p.wins + p.ties + p.losses, "", p.failed])
            writer.writerow(
                [
                    "pairwise-counts",
                    f"{p.a} vs {p.b}",
                    "wins/ties/losses",
                    f"{p.wins}/{p.ties}/{p.losses}",
                    p.aspect,
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
            writer.writerow(
                [
                    "pairwise-flips",
                    f"{p.a} vs {p.b}",
                    "flips/both orders",
                    f"{p.flips}/{p.both_orders}",
                    p.aspect,
                    "",
                    "",
                    p.both_orders,
                    "",
                    "",
                ]
            )
    for found in report.tables:  # a section of its own: a CSV of its rows beside
        with path.with_name(f"{path.stem}-{found.section}.csv").open("w", newline="", encoding="utf-8") as handle:
            table = csv.DictWriter(handle, fieldnames=found.columns)
            table.writeheader()
            table.writerows(found.rows)
    if report.mt_bench or report.mt_bench_pairwise or report.win_rates or report.comparisons or report.diagnostics:
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
    for r in report.mt_bench_pairwise:
        for name in ("win", "loss", "tie", "win_rate", "loss_rate", "win_rate_adjusted"):
            writer.writerow(["mt-bench-pairwise", r.model, "", "overall", name, getattr(r, name)])
    for w in report.win_rates:
        for name, value in w.rate.model_dump().items():
            writer.writerow(["win-rate", w.model, w.baseline, "overall", name, value])
        writer.writerow(["win-rate", w.model, w.baseline, "overall", "flip_rate", w.flip_rate])
    for c in report.comparisons:
        for r in c.rows:
            names = (
                "n",
                "mean_a",
                "mean_b",
                "difference",
                "ci_low",
                "ci_high",
                "p_value",
                "p_method",
                "min_p",
                "p_holm",
                "p_wilcoxon",
                "verdict",
            )
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


def _grouped_bars(
    groups: list[str], bars: dict[str, tuple[list[float], list[float] | None]], *, top: float, label: str, rotation: int = 0
) -> str:
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
            bars[m.model] = (
                [m.aspects[a].mean or 0 if ok else 0 for a, ok in zip(aspects, shown)],
                [m.aspects[a].ci or 0 if ok else 0 for a, ok in zip(aspects, shown)],
            )
        images["Scores per aspect"] = _grouped_bars(aspects, bars, top=5, label="mean score (1-5)")
    informative = [
        m for m in report.mt_bench if m.categories and not all(report.uninformative("mt-bench", m.model, t) for t in m.turns)
    ]
    if informative:
        categories = mt_bench_categories(informative)
        bars = {m.model: ([m.categories.get(c) or 0 for c in categories], None) for m in informative}
        images["MT-bench by category"] = _grouped_bars(categories, bars, top=10, label="MT-bench score (1-10)", rotation=20)
    for m in report.models:
        for kind, labels in m.groups.items():
            if kind == "dataset" and len(labels) < 2:
                continue
            grid = np.array(
                [
                    [
                        labels[label][a].mean
                        if a in labels[label]
                        and labels[label][a].mean is not None
                        and not report.uninformative("just-eval", m.model, a)
                        else np.nan
                        for a in m.aspects
                    ]
                    for label in labels
                ]
            )
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
    return template.render(
        report=report,
        models=models,
        aspects=aspects_of(report),
        cell=cell,
        images=plots(report),
        compare=compare,
        num=num,
        p=pvalue,
        comparison_method=COMPARISON_METHOD,
        lc_notes=lc_notes(report),
        cats=mt_bench_categories(report.mt_bench),
    )
