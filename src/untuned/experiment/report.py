"""An experiment's report: the grid's tables (report.md / .csv / .html), the K curve, the token shift
per cell, and each cell's answers in the official tools' formats; see :mod:`untuned.experiment`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from untuned.errors import UntunedError

if TYPE_CHECKING:
    from untuned.experiment.run import Experiment
    from untuned.judge import Verdict

_KTAG = re.compile(r"^(?P<series>.+)@k(?P<k>\d+)$")


def k_curve(report, path: Path) -> bool:
    """A PNG of each aspect's mean (± its 95% interval) against K, one line per model and prompt set,
    for the models whose names end in @kK; False when the grid does not vary K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, object]]] = {}
    for m in report.models:
        found = _KTAG.match(m.model)
        if found:
            series.setdefault(found["series"], []).append((int(found["k"]), m))
    if not series or all(len(points) < 2 for points in series.values()):
        return False
    aspects = list(dict.fromkeys(a for points in series.values() for _, m in points for a in m.aspects))
    fig, axes = plt.subplots(1, len(aspects), figsize=(3.2 * len(aspects), 3.2), squeeze=False)
    hollow = False
    for ax, aspect in zip(axes[0], aspects):
        for name, points in sorted(series.items()):
            points = sorted((k, m) for k, m in points if aspect in m.aspects and m.aspects[aspect].mean)
            # scores the report calls uninformative (one value to nearly every item) are marked, never drawn as a curve
            kept = [(k, m.aspects[aspect]) for k, m in points if not report.uninformative("just-eval", m.model, aspect)]
            empty = [(k, m.aspects[aspect]) for k, m in points if report.uninformative("just-eval", m.model, aspect)]
            label = name.rsplit("/", 1)[-1]
            if kept:
                ax.errorbar(
                    [k for k, _ in kept],
                    [s.mean for _, s in kept],
                    yerr=[s.ci or 0 for _, s in kept],
                    marker="o",
                    capsize=3,
                    label=label,
                )
            if empty:
                hollow = True
                ax.scatter(
                    [k for k, _ in empty], [s.mean for _, s in empty], marker="x", color="0.6", label=None if kept else label
                )
        if all(report.uninformative("just-eval", m.model, aspect) for points in series.values() for _, m in points):
            ax.set_facecolor("0.94")
            aspect = f"{aspect} (uninformative)"
        ax.set_title(aspect)
        ax.set_xlabel("K (examples)")
        ax.set_ylim(1, 5.2)
    if hollow:
        fig.text(0.01, 0.01, "grey x: scores the report calls uninformative (one value to nearly every item)", fontsize=7)
    axes[0][0].set_ylabel("mean score (1-5)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("In-context alignment curve: score against the number of URIAL examples")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def shift_table(experiment: Experiment) -> str | None:
    """Per cell with a shift analysis: the share of answer tokens the URIAL prefix leaves unshifted,
    marginal or shifted under the base model (the ratios of ``untuned shift context``)."""
    rows = []
    for cell, _ in experiment.cells:
        path = experiment.folder(cell) / "shift" / "summary.json"
        if path.exists():
            ratios = json.loads(path.read_text(encoding="utf-8"))["overall"]["ratios"]
            k = "–" if cell.k is None else str(cell.k)
            rows.append(
                f"| {cell.id} | {k} | "
                + " | ".join(f"{100 * ratios[c]:.1f}%" for c in ("unshifted", "marginal", "shifted"))
                + " |"
            )
    if not rows:
        return None
    return "\n".join(
        [
            "# Token shift per cell (base model without vs with the URIAL prefix)",
            "",
            "| cell | K | unshifted | marginal | shifted |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )


def likelihoods(experiment: Experiment) -> dict[str, tuple[object, object]]:
    """cell id → (cell, its likelihood's mean and 95% bootstrap interval over items), for the cells scored."""
    from untuned.curve import bootstrap_interval

    found = {}
    for cell, _ in experiment.cells:
        path = experiment.folder(cell) / "likelihood.jsonl"
        if path.exists():
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            found[cell.id] = (cell, bootstrap_interval([r["nll"] for r in rows]))
    return found


def likelihood_report(experiment: Experiment, folder: Path) -> bool:
    """likelihood.md (each cell's NLL per token of the target answers, 95% bootstrap over items, and for each
    model, prompt set and dataset whether each step in K moves it beyond noise) and likelihood.png; False
    when no cell was scored."""
    scored = likelihoods(experiment)
    if not scored:
        return False
    lines = [
        "# Likelihood of the target answers per cell (NLL per token, lower is closer; 95% bootstrap over items)",
        "",
        "| cell | K | NLL per token | 95% interval |",
        "|---|---|---|---|",
    ]
    series: dict[str, list[tuple[int, object]]] = {}
    for cell, value in scored.values():
        k = "–" if cell.k is None else str(cell.k)
        lines.append(f"| {cell.id} | {k} | {value.mean:.4f} | [{value.low:.4f}, {value.high:.4f}] |")
        found = _KTAG.match(cell.prompt)
        if found and cell.k is not None:
            series.setdefault(f"{cell.model.name}/{found['series']}/{cell.dataset.name}", []).append((cell.k, value))
    lines += ["", "## Between K", ""]
    for name, points in sorted(series.items()):
        points.sort(key=lambda p: p[0])
        for (k0, a), (k1, b) in zip(points, points[1:]):
            apart = b.high < a.low or a.high < b.low
            verdict = (
                ("lower" if b.mean < a.mean else "higher") + ", beyond noise" if apart else "within noise (the intervals overlap)"
            )
            lines.append(f"- {name}: K = {k0} → {k1}: {verdict}")
    (folder / "likelihood.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _likelihood_plot(series, folder / "likelihood.png")
    return True


def _likelihood_plot(series: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, points in sorted(series.items()):
        ks, values = [k for k, _ in points], [v for _, v in points]
        errors = [[v.mean - v.low for v in values], [v.high - v.mean for v in values]]
        ax.errorbar(ks, [v.mean for v in values], yerr=errors, marker="o", capsize=3, label=name)
    ax.set_xlabel("K (examples)")
    ax.set_ylabel("NLL per token of the target answers")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compared_generators(experiment: Experiment, judged: dict[Path, list[Verdict]]) -> list[tuple[str, str]] | None:
    """The plan's ``compare`` pairs as the generator names the verdicts carry (``judged``: each verdict file's
    verdicts; a file lies in its cell's folder and names the cell's generator); None when the plan names
    none (every pair is compared)."""
    if experiment.plan.compare is None:
        return None
    folders = {experiment.folder(cell): cell.name for cell, _ in experiment.cells}
    generators = {folders[path.parent]: found[0].generator for path, found in judged.items() if found and path.parent in folders}
    return [(generators[a], generators[b]) for a, b in experiment.plan.compare if a in generators and b in generators]


def write_report(experiment: Experiment, files: list[Path]) -> Path:
    """The grid's report (report.md / .csv / .html, the K curve) and each cell's answers in the official
    tools' formats (just-eval and AlpacaEval JSON), named in the manifest."""
    from untuned.interop import export_run, load_verdicts
    from untuned.report import build_report, to_html, to_markdown, write_csv

    folder = experiment.out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    judged = {path: load_verdicts(path) for path in files if path.exists()}
    verdicts = [v for found in judged.values() for v in found]
    scored = likelihood_report(experiment, folder)
    if not verdicts and not scored:
        raise UntunedError("nothing judged or scored yet: no verdicts and no likelihoods to report")
    curve = False
    if verdicts:
        report = build_report(verdicts, compare=True, pairs=compared_generators(experiment, judged))
        (folder / "report.md").write_text(to_markdown(report, compare=True), encoding="utf-8")
        write_csv(report, folder / "report.csv")
        (folder / "report.html").write_text(to_html(report, compare=True), encoding="utf-8")
        curve = k_curve(report, folder / "k-curve.png")
    shifts = shift_table(experiment)
    if shifts:
        (folder / "shift.md").write_text(shifts, encoding="utf-8")
    for cell, _ in experiment.cells:
        answers = experiment.folder(cell) / "answers.jsonl"
        if answers.exists():
            official = {fmt: experiment.folder(cell) / f"answers.{fmt}.json" for fmt in ("just-eval", "alpaca-eval")}
            for fmt, target in official.items():
                export_run(answers, target, fmt=fmt)  # type: ignore[arg-type]
            experiment.log_event({"event": "exported", "cell": cell.id, "files": {k: str(v) for k, v in official.items()}})
    experiment.log_event({"event": "reported", "report": str(folder / "report.md"), "k_curve": curve})
    return folder
