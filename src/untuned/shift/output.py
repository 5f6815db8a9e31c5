"""A shift run on disk: resumable examples, then per-token tables, summary, HTML viewer and plots.

``OUT/examples.jsonl`` is the run's own record (append-only, one analysed answer per line, each
with its tokens); everything else is derived from it when the run finishes and can be rebuilt::

    OUT/settings.json    what the run is (a rerun with other settings is refused)
    OUT/examples.jsonl   ShiftExample records
    OUT/tokens.jsonl     one row per answer token, top-k only (or tokens.parquet)
    OUT/summary.json     ShiftSummary: ratios, by dataset / tag / position, top shifted tokens
    OUT/shift.html       self-contained viewer
    OUT/plots/*.png      category ratios, shift by position, top shifted tokens
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Literal

from untuned.answers import AnswerItem
from untuned.errors import UntunedError
from untuned.jsonl import JsonlFile
from untuned.runner import ResumableRun, RunSummary
from untuned.shift.analyze import ShiftAnalyzer
from untuned.shift.records import CATEGORIES, ShiftExample, ShiftSettings, ShiftSummary, summarize

log = logging.getLogger(__name__)
TokenFormat = Literal["jsonl", "parquet"]  # the per-token table
COLOURS = {"unshifted": "#4c9a6a", "marginal": "#e0b040", "shifted": "#c8553d"}


def run_shift(
    analyzer: ShiftAnalyzer,
    items: Iterable[AnswerItem],
    out: str | Path,
    *,
    force: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_example: Callable[[ShiftExample], None] | None = None,
    batch_size: int = 1,
) -> RunSummary[ShiftExample]:
    """Analyse every item not yet in ``out`` (resuming); the summary holds every example of the run.

    ``batch_size`` answers are scored together where the backend can (transformers, text mode).
    """
    out = Path(out)
    run = ResumableRun(
        JsonlFile(out / "examples.jsonl", ShiftExample, label="shift example"),
        settings=analyzer.settings,
        settings_file=out / "settings.json",
        aside=out,
    )
    return run.run(
        list(items),
        analyzer.analyze_many,
        force=force,
        batch_size=batch_size,
        tally=lambda example: {"tokens": len(example.tokens)},
        on_start=on_start,
        on_record=on_example,
    )


def write_outputs(
    examples: list[ShiftExample], out: str | Path, settings: ShiftSettings, *, tokens: TokenFormat = "jsonl", plots: bool = True
) -> ShiftSummary:
    """Write tokens, summary.json, shift.html and plots for ``examples``; return the summary."""
    out = Path(out)
    summary = summarize(
        examples,
        mode=settings.mode,
        base=settings.base,
        aligned=settings.aligned,
        context=settings.context,
        kl_method=settings.kl_method,
        protocol=settings.protocol,
        ranked=settings.ranked,
        answers_sampling=settings.answers_sampling,
    )
    (out / "summary.json").write_text(summary.model_dump_json(indent=2), encoding="utf-8")
    write_tokens(examples, out / f"tokens.{tokens}", tokens)
    write_html(examples, summary, out / "shift.html")
    if plots:
        write_plots(summary, out / "plots")
    return summary


def token_rows(examples: Iterable[ShiftExample]) -> Iterable[dict]:
    for example in examples:
        for t in example.tokens:
            yield {
                "example": example.id,
                "dataset": example.dataset,
                "index": t.index,
                "id": t.id,
                "text": t.text,
                "rank": t.rank,
                "rank_worst": t.rank_worst,
                "prob": t.prob,
                "category": t.category,
                "answer_id": t.answer_id,
                "answer_text": t.answer_text,
                "answer_rank": t.answer_rank,
                "answer_aligned_rank": t.answer_aligned_rank,
                "end": t.end,
                "aligned_rank": t.aligned_rank,
                "aligned_prob": t.aligned_prob,
                "kl": t.kl,
                "kl_top10": t.kl_top10,
                "top_ids": [x.id for x in t.top],
                "top_texts": [x.text for x in t.top],
                "top_probs": [x.prob for x in t.top],
                "aligned_top_ids": [x.id for x in t.aligned_top],
                "aligned_top_probs": [x.prob for x in t.aligned_top],
            }


def write_tokens(examples: list[ShiftExample], path: Path, fmt: TokenFormat) -> None:
    rows = token_rows(examples)
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise UntunedError("Parquet output needs pyarrow: pip install 'untuned[parquet]'") from exc
        pq.write_table(pa.Table.from_pylist(list(rows)), path)
        return
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def viewer_data(examples: list[ShiftExample]) -> list[dict]:
    """Compact per-example data for the viewer: tokens as [text shown (the answer's), category letter, rank,
    prob, top, KL, the ranked token's text where the answer took another]."""
    data = []
    for example in examples:
        tokens = [
            [
                t.answer_text if t.answer_text is not None else t.text,
                t.category[0],
                t.rank,
                round(t.prob, 4),
                [[x.text, round(x.prob, 4)] for x in t.top],
                None if t.kl is None else round(t.kl, 4),
                t.text if t.answer_text is not None else None,
            ]
            for t in example.tokens
        ]
        data.append(
            {
                "id": example.id,
                "dataset": example.dataset or "",
                "query": example.query,
                "ratios": example.ratios(),
                "truncated": example.truncated,
                "tokens": tokens,
            }
        )
    return data


def write_html(examples: list[ShiftExample], summary: ShiftSummary, path: Path) -> None:
    from jinja2 import Environment, select_autoescape

    env = Environment(autoescape=select_autoescape(default=True))
    template = env.from_string(resources.files("untuned.shift").joinpath("viewer.html").read_text(encoding="utf-8"))
    # </script> inside the JSON would end the script element: escape "<" in the embedded data
    data = json.dumps(viewer_data(examples), ensure_ascii=False).replace("<", "\\u003c")
    html = template.render(summary=summary, data=data, colours=COLOURS, categories=CATEGORIES)
    path.write_text(html, encoding="utf-8")


def write_plots(summary: ShiftSummary, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=120)
        plt.close(fig)
        written.append(folder / name)

    groups = {"all": summary.overall, **summary.by_dataset}
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(groups)), 3.6))
    bottom = [0.0] * len(groups)
    for cat in CATEGORIES:
        values = [g.ratios[cat] for g in groups.values()]
        ax.bar(list(groups), values, bottom=bottom, color=COLOURS[cat], label=cat)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("share of answer tokens")
    ax.set_title(f"Token categories under {summary.base}")
    ax.legend(loc="lower right", fontsize=8)
    ax.tick_params(axis="x", labelrotation=30)
    save(fig, "categories.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    pairs = ((summary.by_position, "tokens from answer start"), (summary.by_relative_position, "tenth of the answer"))
    for ax, (buckets, label) in zip(axes, pairs):
        ax.plot([b.label for b in buckets], [b.shifted for b in buckets], marker="o", color=COLOURS["shifted"], label="shifted")
        ax.plot(
            [b.label for b in buckets], [b.marginal for b in buckets], marker="s", color=COLOURS["marginal"], label="marginal"
        )
        ax.set_xlabel(label)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    axes[0].set_ylabel("share of positions")
    fig.suptitle("Shift along the answer: by absolute position and by decile")
    axes[0].legend(fontsize=8)
    save(fig, "position.png")

    top = summary.top_shifted[:20][::-1]
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.28 * len(top) + 1)))
    ax.barh([repr(t.text)[1:-1] or "∅" for t in top], [t.count for t in top], color=COLOURS["shifted"])
    ax.set_xlabel("times shifted")
    ax.set_title("Most frequently shifted tokens")
    save(fig, "top_shifted.png")
    return written
