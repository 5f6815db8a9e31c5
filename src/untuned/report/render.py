"""A report as Markdown, CSV (long format, one number per row) and HTML with plots."""

from __future__ import annotations

import base64
import csv
import io
from importlib import resources
from pathlib import Path

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


def to_markdown(report: Report, *, compare: bool = False) -> str:
    aspects = aspects_of(report)
    parts = ["# Judging report", "",
             f"Means with 95% confidence intervals (± 1.96 s/√n). N/A scores: "
             f"{'left out (counted as missing)' if report.na == 'skip' else 'counted as 5, as just-eval does'}.", ""]  # fmt: skip
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
        rows = [[p.a, p.b, p.aspect, str(p.wins), str(p.ties), str(p.losses), str(p.failed)] for p in report.pairwise]
        parts += ["## Pairwise (A wins / tie / B wins; both orders asked, disagreement = tie)", "",
                  _table(["A", "B", "aspect", "A wins", "ties", "B wins", "failed"], rows), ""]  # fmt: skip
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


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plots(report: Report) -> dict[str, str]:
    """Base64 PNGs: per-aspect bars with CIs, and a heatmap per model and tag kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    images = {}
    aspects = aspects_of(report)
    if report.models and aspects:
        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(aspects) * max(1, len(report.models)) / 2), 3.8))
        width = 0.8 / len(report.models)
        for i, m in enumerate(report.models):
            means = [m.aspects[a].mean or 0 if a in m.aspects else 0 for a in aspects]
            errors = [m.aspects[a].ci or 0 if a in m.aspects else 0 for a in aspects]
            ax.bar(np.arange(len(aspects)) + i * width, means, width, yerr=errors, capsize=3, label=m.model)
        ax.set_xticks(np.arange(len(aspects)) + width * (len(report.models) - 1) / 2, aspects)
        ax.set_ylim(0, 5.3)
        ax.set_ylabel("mean score (1-5)")
        ax.legend(fontsize=8)
        images["Scores per aspect"] = _png(fig)
    for m in report.models:
        for kind, labels in m.groups.items():
            if kind == "dataset" and len(labels) < 2:
                continue
            grid = np.array([[labels[label][a].mean if a in labels[label] and labels[label][a].mean is not None else np.nan
                              for a in m.aspects] for label in labels])  # fmt: skip
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
                           compare=compare)  # fmt: skip
