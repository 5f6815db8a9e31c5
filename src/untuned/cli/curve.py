"""``untuned curve``: how far K examples move the base model toward held-out answers (NLL per token, no judge)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from untuned.cli.common import LOADING, ModelOptions, friendly, model_options, out, progress, setup_logging
from untuned.curve import Curve, aligned_nlls, bootstrap_interval, measure, plan
from untuned.errors import UntunedError
from untuned.prompt import load_prompt


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UntunedError(f"--k {text!r}: write numbers of examples separated by commas, like 0,1,2,4,8") from None
    if not ks:
        raise UntunedError("--k needs at least one number of examples")
    return ks


@friendly
@model_options(*LOADING, "verbose")
def curve_command(
    source: Annotated[str, typer.Argument(help="The examples: pool:NAME (kept answers), a bundled set or a .urial file.")],
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder for points.jsonl, summary.json and curve.png.")],
    k: Annotated[str, typer.Option("--k", help="Numbers of examples in the prompt, comma-separated.")] = "0,1,2,4,8,16",
    orders: Annotated[int, typer.Option("--orders", min=1, help="Random orders of the examples, averaged.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the orders and of the bootstrap.")] = 0,
    reference: Annotated[
        str | None, typer.Option("--reference", help="A prompt set to score the same held-out answers under ('' for none).")
    ] = "helpful",
    aligned: Annotated[
        str | None, typer.Option("--aligned", help="An aligned (instruct) model: its own likelihood of the answers, beside.")
    ] = None,
    *,
    options: ModelOptions,
) -> None:
    """The alignment curve without a judge: for each K and each order, the mean per-token NLL of every example's
    answer (held out) under the base model with K other examples in the prompt; bootstrap intervals over examples;
    the fit NLL(K) ≈ c + a·K^(−α); beside it, the same answers under a bundled set."""
    setup_logging(options.verbose)
    examples = load_prompt(source)
    ks = _ks(k)
    cells = plan(examples.k, ks, orders, seed)  # refused here, before a model loads, if K is too large
    generic = load_prompt(reference) if reference else None
    backend = options.load_model()
    try:
        with progress() as bar:
            task = bar.add_task(f"scoring {len(cells)} prompts", total=len(cells), note="")
            curve = measure(
                backend, examples, ks, orders=orders, seed=seed, reference=generic, on_point=lambda _: bar.advance(task)
            )
        if aligned:
            chat = options.load_model(aligned)
            curve.aligned, curve.aligned_name = bootstrap_interval(aligned_nlls(chat, examples.examples), seed), chat.name
    finally:
        options.close()
    settings = {"source": source, "model": options.model, "ks": ks, "orders": orders, "seed": seed, "reference": reference}
    settings["aligned"] = aligned
    write(curve, output, settings, names=[e.query for e in examples.examples])
    show(curve)


def write(curve: Curve, folder: Path, settings: dict, *, names: list[str]) -> None:
    """points.jsonl (every scored prompt), summary.json (the settings, per-K intervals, the fit), curve.png."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "points.jsonl").open("w", encoding="utf-8") as handle:
        for point in curve.points:
            handle.write(json.dumps({**dataclasses.asdict(point), "query": names[point.item]}, ensure_ascii=False) + "\n")
    summary = {
        "settings": settings,
        "measure": "mean per-token negative log-likelihood (nats) of held-out answers; intervals: 95% bootstrap over examples",
        "by_k": {str(k): dataclasses.asdict(v) for k, v in curve.by_k.items()},
        "fit": dataclasses.asdict(curve.fit) if curve.fit else None,
        "fit_problem": curve.fit_problem,
        "reference": {"prompt_set": curve.reference_name, **dataclasses.asdict(curve.reference)} if curve.reference else None,
        "aligned": {"model": curve.aligned_name, **dataclasses.asdict(curve.aligned)} if curve.aligned else None,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    plot(curve, folder / "curve.png")


def plot(curve: Curve, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = curve.ks
    means = [curve.by_k[k].mean for k in ks]
    errors = [[curve.by_k[k].mean - curve.by_k[k].low for k in ks], [curve.by_k[k].high - curve.by_k[k].mean for k in ks]]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.errorbar(ks, means, yerr=errors, fmt="o-", capsize=3, label="your examples (95% bootstrap)")
    if curve.fit:
        import numpy as np

        grid = np.linspace(max(min(k for k in ks if k > 0), 0.5), max(ks), 100)
        axis.plot(grid, curve.fit.c + curve.fit.a * grid ** (-curve.fit.alpha), "--", label=f"fit: α = {curve.fit.alpha:.2f}")
    if curve.reference:
        axis.axhline(curve.reference.mean, color="grey", linestyle=":", label=f"with the {curve.reference_name} set")
    if curve.aligned:
        axis.axhline(curve.aligned.mean, color="green", linestyle="-.", label=f"{curve.aligned_name} (its chat template)")
    axis.set_xlabel("K (examples in the prompt)")
    axis.set_ylabel("NLL per token of held-out answers")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def show(curve: Curve) -> None:
    table = Table("K", "NLL per token", "95% interval", title="held-out answers under the base model")
    for k in curve.ks:
        v = curve.by_k[k]
        table.add_row(str(k), f"{v.mean:.4f}", f"[{v.low:.4f}, {v.high:.4f}]")
    for label, r in ((curve.reference_name, curve.reference), (f"aligned: {curve.aligned_name}", curve.aligned)):
        if r is not None:
            table.add_row(str(label), f"{r.mean:.4f}", f"[{r.low:.4f}, {r.high:.4f}]")
    out.print(table)
    first, last = curve.by_k[curve.ks[0]], curve.by_k[curve.ks[-1]]
    if last.high < first.low:
        out.print(f"K = {curve.ks[-1]} is below K = {curve.ks[0]}: the intervals do not overlap")
    else:
        out.print(f"K = {curve.ks[-1]} and K = {curve.ks[0]} are within noise here: their intervals overlap")
    if curve.fit:
        f = curve.fit
        interval = f" (95% interval {f.alpha_interval[0]:.2f} to {f.alpha_interval[1]:.2f})" if f.alpha_interval else ""
        out.print(f"fit: NLL(K) ≈ {f.c:.4f} + {f.a:.4f}·K^(−{f.alpha:.3f}){interval}")
    else:
        out.print(f"no fit: {curve.fit_problem}")
