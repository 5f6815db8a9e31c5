"""Accuracy of untuned's AlpacaEval length-controlled win rate against AlpacaEval's published figures,
and the build of the data untuned ships for it (``src/untuned/report/alpaca_eval_lc.csv``).

Data (../shared/data/alpaca_eval/, from tatsu-lab/alpaca_eval, Apache-2.0): 52 models' verdicts
(weighted GPT-4-turbo annotator, baseline gpt4_1106_preview), the leaderboard with every model's
published LC, and AlpacaEval's published per-model GLM weights.

1. Instruction difficulty. AlpacaEval's GLM gives model m's preference on instruction x as
   logistic(w_len(m) tanh(len) + w_diff(m) d(x) + w_ng(m)); its published weights w(m) were fitted with
   AlpacaEval's difficulty d. Holding those weights fixed, d(x) is estimated jointly from every
   model's verdict on x (maximum a posteriori, a normal prior of precision ``lambda`` on d). As in
   AlpacaEval's code, a model's row i is tied to the difficulty of instruction *position* i of its
   file (AlpacaEval assigns difficulty by row position, so a file with missing rows shifts it).
   ``lambda`` is chosen from a small grid by how well the published weights with this d reproduce
   the published LC of the 51 models with verdicts; the other leaderboard models, whose verdicts
   are not here, are the out-of-sample check.
2. Gamed baselines. AlpacaEval's rows of gpt4_1106_preview made verbose / concise (df_gamed.csv) are
   not here. They are reconstructed per instruction: the length feature of a real verbose / concise
   answer against the same baseline (gpt-3.5-turbo-1106_verbose / _concise, whose verdicts are here)
   and, as preference, what AlpacaEval's published weights of gpt4_1106_preview_verbose / _concise
   predict for it.
3. The table: untuned's LC (the shipped code, report.alpaca_eval.length_controlled) against the
   published LC for every leaderboard model with verdicts here. In sample: the shipped difficulty was
   estimated from these very models' verdicts.
4. Out of sample (leave one model out): for each model, the difficulty and the gamed rows are estimated
   again from the other models only, and the model's LC computed with them. This is the accuracy to
   expect for a model whose verdicts the shipped difficulty has never seen (a user's own).

Run: .venv/bin/python bench/alpaca_eval_lc.py [--write] [--loo]   (--write rewrites the shipped CSV; --loo adds 4)
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import statistics
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from smoke import SHARED, SMOKE, skipped

from untuned.report.alpaca_eval import GamedRows, length_controlled

DATA = SHARED / "alpaca_eval"
SHIPPED = Path(__file__).resolve().parents[1] / "src" / "untuned" / "report" / "alpaca_eval_lc.csv"
BASELINE = "gpt4_1106_preview"
PROXIES = {"verbose": "gpt-3.5-turbo-1106_verbose", "concise": "gpt-3.5-turbo-1106_concise"}
GAMED = ("_verbose", "_concise", "gpt4_gamed")
PRECISIONS = (0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 1.0)


def logistic(x):
    return np.exp(-np.logaddexp(0.0, -x))


def load():
    by_model: dict[str, list[dict]] = {}
    with gzip.open(DATA / "preferences.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            by_model.setdefault(row["model"], []).append(row)
    with (DATA / "glm_weights_length_controlled_v1.csv").open(encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        weights = {name: tuple(map(float, values)) for name, *values in reader}
    with (DATA / "leaderboard.csv").open(encoding="utf-8") as handle:
        board = {row["model"] if "model" in row else row[""]: row for row in csv.DictReader(handle)}
    return by_model, weights, board


def arrays(rows: list[dict]):
    """Preference in [0, 1], the length feature and the row positions of a model's usable verdicts."""
    kept = [(i, r) for i, r in enumerate(rows) if r["preference"] is not None]
    p = np.asarray([1.5 if r["preference"] == 0 else r["preference"] for _, r in kept], dtype=float) - 1
    delta = np.asarray([r["chars_baseline"] - r["chars_model"] for _, r in kept], dtype=float)
    return p, np.tanh(delta / delta.std(ddof=1)), np.asarray([i for i, _ in kept])


def estimate_difficulty(by_model, weights, precision: float, n: int, *, leave_out: str | None = None) -> np.ndarray:
    offsets, slopes, targets, positions = [], [], [], []
    for model, rows in by_model.items():
        if model not in weights or model == BASELINE or model == leave_out:
            continue
        w_len, w_diff, w_ng = weights[model]
        p, tanh_length, position = arrays(rows)
        offsets.append(w_len * tanh_length + w_ng)
        slopes.append(np.full(len(p), w_diff))
        targets.append(p)
        positions.append(position)
    a, b, p, x = (np.concatenate(v) for v in (offsets, slopes, targets, positions))
    d = np.zeros(n)
    for _ in range(200):  # damped Newton steps on each instruction's own one-dimensional problem
        q = logistic(a + b * d[x])
        gradient = np.bincount(x, b * (p - q), minlength=n) - precision * d
        curvature = np.bincount(x, b * b * q * (1 - q), minlength=n) + precision
        d += np.clip(gradient / curvature, -1, 1)
    return d


def published_fit_error(d, weights, board, models) -> float:
    """Mean |LC from the published weights and this difficulty − published LC| over ``models``."""
    errors = [
        abs(logistic(weights[m][2] + weights[m][1] * d).mean() * 100 - float(board[m]["length_controlled_winrate"]))
        for m in models
    ]
    return statistics.fmean(errors)


def gamed_rows(by_model, weights, d, order) -> tuple[GamedRows, dict[str, np.ndarray]]:
    columns = {}
    for kind, proxy in PROXIES.items():
        w_len, w_diff, w_ng = weights[f"{BASELINE}_{kind}"]
        p, tanh_length, position = arrays(by_model[proxy])
        # the proxy's rows in AlpacaEval's instruction order, at that instruction's difficulty
        at = {order[r["instruction"]]: t for r, t in zip((by_model[proxy][i] for i in position), tanh_length)}
        t = np.asarray([at[i] for i in range(len(d))])
        columns[f"{kind}_tanh_length"] = t
        columns[f"{kind}_preference"] = logistic(w_len * t + w_diff * d + w_ng)
    rows = GamedRows(
        tanh_length=np.r_[columns["verbose_tanh_length"], columns["concise_tanh_length"]],
        difficulty=np.r_[d, d],
        preference=np.r_[columns["verbose_preference"], columns["concise_preference"]],
    )
    return rows, columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the shipped CSV")
    parser.add_argument("--loo", action="store_true", help="also each model's LC with itself left out of the difficulty")
    args = parser.parse_args()
    console = Console()
    if not DATA.exists():
        if SMOKE:  # 52 models' verdicts: no cut of them in tests/fixtures
            return skipped(f"the LC accuracy check: its data ({DATA}) is not here")
        raise SystemExit(f"benchmark data not found: {DATA}")
    if SMOKE and args.write:
        raise SystemExit("--write in the smoke run would rewrite the shipped CSV")
    by_model, weights, board = load()
    instructions = [r["instruction"] for r in by_model[BASELINE]]  # AlpacaEval's order: the baseline's full file
    order = {text: i for i, text in enumerate(instructions)}
    with_lc = [m for m in weights if m in board and board[m]["length_controlled_winrate"]]
    in_sample = [m for m in with_lc if m in by_model and m != BASELINE]
    out_of_sample = [m for m in with_lc if m not in by_model]

    fits = {lam: estimate_difficulty(by_model, weights, lam, len(instructions)) for lam in PRECISIONS}
    table = Table(title="Difficulty: published weights with this d vs published LC (mean |error|, points)")
    for column in ("prior precision", f"{len(in_sample)} models with verdicts", f"{len(out_of_sample)} without"):
        table.add_column(column, justify="right")
    for lam, d in fits.items():
        table.add_row(
            f"{lam:g}",
            f"{published_fit_error(d, weights, board, in_sample):.3f}",
            f"{published_fit_error(d, weights, board, out_of_sample):.3f}",
        )
    console.print(table)
    precision = min(fits, key=lambda lam: published_fit_error(fits[lam], weights, board, in_sample))
    d = fits[precision]
    console.print(f"chosen precision {precision:g}; difficulty mean {d.mean():.3f}, sd {d.std():.3f}")
    gamed, columns = gamed_rows(by_model, weights, d, order)

    if args.write:
        with SHIPPED.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            names = ["verbose_tanh_length", "verbose_preference", "concise_tanh_length", "concise_preference"]
            writer.writerow(["position", "difficulty", *names, "instruction"])
            for i, text in enumerate(instructions):
                writer.writerow([i, f"{d[i]:.6f}", *(f"{columns[n][i]:.6f}" for n in names), text])
        console.print(f"wrote {SHIPPED}")
    from untuned.report.alpaca_eval import shipped

    shipped.cache_clear()
    ship = shipped()
    results = Table(title="untuned's LC vs AlpacaEval's published LC (weighted GPT-4-turbo annotator)")
    for column in ("model", "published LC", "untuned LC", "error", "published SE", "untuned SE"):
        results.add_column(column, justify="left" if column == "model" else "right")
    errors, gamed_errors = [], []
    for model in sorted(in_sample, key=lambda m: -float(board[m]["length_controlled_winrate"])):
        lc = model_lc(by_model[model], ship.by_position, ship.gamed)
        published = float(board[model]["length_controlled_winrate"])
        error = lc.win_rate - published
        (gamed_errors if any(g in model for g in GAMED) else errors).append((abs(error), model))
        se = board[model]["lc_standard_error"]
        results.add_row(
            model,
            f"{published:.2f}",
            f"{lc.win_rate:.2f}",
            f"{error:+.2f}",
            f"{float(se):.2f}" if se else "–",
            f"{lc.standard_error:.2f}",
        )
    console.print(results)
    values = [e for e, _ in errors]
    worst = max(errors)
    console.print(
        f"{len(errors)} models (length-gamed variants apart): mean |error| {statistics.fmean(values):.2f} points, "
        f"worst {worst[0]:.2f} ({worst[1]}); within 1 point: {sum(v <= 1 for v in values)}/{len(values)}"
    )
    console.print(
        f"{len(gamed_errors)} length-gamed variants: mean |error| {statistics.fmean(e for e, _ in gamed_errors):.2f}, "
        f"worst {max(gamed_errors)[0]:.2f} ({max(gamed_errors)[1]})"
    )
    if args.loo:
        leave_one_out(console, by_model, weights, board, in_sample, order, len(instructions), precision)


def model_lc(rows: list[dict], by_position, gamed: GamedRows):
    """A model's LC as AlpacaEval computes it from its annotations file: every row in file order (a row with
    no preference in the length spread and the mean), the difficulty of the row's position."""
    return length_controlled(
        [r["preference"] for r in rows],
        [r["chars_model"] for r in rows],
        [r["chars_baseline"] for r in rows],
        [by_position[i] for i in range(len(rows))],
        gamed=gamed,
    )


def leave_one_out(console, by_model, weights, board, models, order, n, precision) -> None:
    """Each model's LC with the difficulty and gamed rows estimated from the other models only."""
    table = Table(title=f"Out of sample: each model left out of the difficulty it is scored with (precision {precision:g})")
    for column in ("model", "published LC", "LC, left out", "error"):
        table.add_column(column, justify="left" if column == "model" else "right")
    errors = []
    for model in sorted(models, key=lambda m: -float(board[m]["length_controlled_winrate"])):
        d = estimate_difficulty(by_model, weights, precision, n, leave_out=model)
        gamed, _ = gamed_rows(by_model, weights, d, order)
        lc = model_lc(by_model[model], list(d), gamed)
        published = float(board[model]["length_controlled_winrate"])
        if not any(g in model for g in GAMED):
            errors.append((abs(lc.win_rate - published), model))
        table.add_row(model, f"{published:.2f}", f"{lc.win_rate:.2f}", f"{lc.win_rate - published:+.2f}")
    console.print(table)
    values = [e for e, _ in errors]
    console.print(
        f"out of sample, {len(values)} models (length-gamed variants apart): mean |error| {statistics.fmean(values):.2f}, "
        f"worst {max(errors)[0]:.2f} ({max(errors)[1]}); within 1 point: {sum(v <= 1 for v in values)}/{len(values)}"
    )


if __name__ == "__main__":
    main()
