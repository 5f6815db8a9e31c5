"""AlpacaEval 2's length-controlled (LC) win rate, computed the way AlpacaEval computes it.

The reference is ``src/alpaca_eval/metrics/glm_winrate.py`` in tatsu-lab/alpaca_eval (Apache-2.0),
GLM ``length_controlled_v1``. Per model, separately, a logistic GLM without intercept is fitted to
P(model preferred) on three features:

- ``tanh(delta / sd(delta))``, delta = baseline answer length minus the model's, in characters,
  sd the sample standard deviation over the model's items;
- the instruction's difficulty (one number per AlpacaEval instruction, estimated once from many models);
- ``not_gamed_baseline``: 1 for the model's rows, 0 for the rows of two *length-gamed* baselines
  (the baseline prompted to be verbose and to be concise, judged against itself) that are appended
  with sample weight 0.1 each and pin the length slope.

The fit is L1-penalised logistic regression (liblinear, ``random_state=123``) whose ``C`` is chosen
among ten values from 1e-4 to 1e4 by 5-fold grouped cross-validation of the weighted log loss; each
preference p enters as a win with weight p and a loss with weight 1 - p. The LC win rate is the mean
predicted preference with the length feature set to 0, over the model's items; its standard error
(``lc_standard_error``) the standard error of that mean, as AlpacaEval reports it.

What untuned ships (``alpaca_eval_lc.csv``, built by ``bench/alpaca_eval_lc.py`` from AlpacaEval's
published data; see that script): the difficulty of the 805 instructions, estimated jointly from 52
models' published verdicts under AlpacaEval's published per-model GLM weights, and the gamed
baselines' rows, reconstructed (AlpacaEval's own ``df_gamed.csv`` is only on the Hugging Face Hub):
per instruction, the length feature of a real verbose / concise answer against the same baseline
and the preference AlpacaEval's published weights of the gamed baseline predict for it.
AlpacaEval's own ``df_gamed.csv`` (``report --difficulty``) replaces both.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from untuned.errors import DataFileError

GAMED_WEIGHT = 0.2 / 2  # regularize_to_baseline_lambda, shared by the two gamed baselines
CS = np.logspace(-4, 4, 10)  # LogisticRegressionCV's default grid (Cs=10)
FOLDS = 5
SEED = 123
SHIPPED = "untuned's estimate of the difficulty and gamed rows (bench/alpaca_eval_lc.py)"
FEATURES = ("np.tanh(std_delta_len)", "instruction_difficulty", "not_gamed_baseline.astype(float)")


@dataclass(frozen=True)
class GamedRows:
    """The length-gamed baselines' rows: length feature, difficulty and preference (in [0, 1]) per row."""

    tanh_length: np.ndarray
    difficulty: np.ndarray
    preference: np.ndarray


@dataclass(frozen=True)
class Difficulty:
    """AlpacaEval's instructions: difficulty by position and by instruction text, and the gamed rows."""

    by_position: list[float]
    by_instruction: dict[str, float]
    gamed: GamedRows
    source: str


class LengthControlled(BaseModel):
    """The outcome of one model's length-controlled fit."""

    win_rate: float = Field(description="Mean predicted preference with no length difference, in percent.")
    standard_error: float | None = Field(description="Standard error of that mean, in percent (lc_standard_error).")
    weights: dict[str, float] = Field(description="The GLM's coefficients, named as AlpacaEval names them.")
    c: float = Field(description="The inverse penalty strength chosen by cross-validation.")


def _logistic(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


def _classifier(c: float):
    """liblinear logistic regression with an L1 penalty and no intercept, in this scikit-learn's spelling."""
    import sklearn
    from sklearn.linear_model import LogisticRegression

    major, minor = (int(part) for part in sklearn.__version__.split(".")[:2])
    penalty = {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}
    return LogisticRegression(C=c, solver="liblinear", fit_intercept=False, random_state=SEED, **penalty)


def _weighted_log_loss(model, x: np.ndarray, target: np.ndarray, weight: np.ndarray) -> float:
    predicted = np.clip(model.predict_proba(x)[:, 1], 1e-15, 1 - 1e-15)
    return float(-np.mean((target * np.log(predicted) + (1 - target) * np.log(1 - predicted)) * weight))


def fit_preferences(features: np.ndarray, preference: np.ndarray, weight: np.ndarray):
    """Logistic regression of soft labels ``preference`` in [0, 1], with L1 strength chosen by grouped
    cross-validation (each row split into a win and a loss, kept in the same fold); returns (model, C)."""
    from sklearn.model_selection import GroupKFold

    n = len(preference)
    x = np.vstack([features, features])
    label = np.r_[np.ones(n), np.zeros(n)]
    target = np.r_[preference, 1 - preference]  # the probability of each duplicated row's label
    row_weight = np.r_[weight, weight]
    sample_weight = target * row_weight
    groups = np.r_[np.arange(n), np.arange(n)]
    folds = list(GroupKFold(n_splits=FOLDS).split(x, label, groups))
    losses = []
    for c in CS:
        fold_losses = []
        for train, test in folds:
            model = _classifier(c).fit(x[train], label[train], sample_weight=sample_weight[train])
            # the log loss of the soft target: a duplicated row of label 1 stands for p, of label 0 for 1 - p
            soft = np.where(label[test] == 1, target[test], 1 - target[test])
            fold_losses.append(_weighted_log_loss(model, x[test], soft, row_weight[test]))
        losses.append(np.mean(fold_losses))
    best = float(CS[int(np.argmin(losses))])
    return _classifier(best).fit(x, label, sample_weight=sample_weight), best


def length_controlled(
    preferences: Sequence[float],
    model_lengths: Sequence[int],
    baseline_lengths: Sequence[int],
    difficulty: Sequence[float],
    *,
    gamed: GamedRows | None,
) -> LengthControlled:
    """AlpacaEval's LC win rate of one model against the baseline: ``preferences`` in AlpacaEval's
    encoding (1-2, 0 or 1.5 a draw), answer lengths in characters, each item's instruction difficulty,
    and the gamed baselines' rows (None: fit without them, as AlpacaEval's ``length_controlled_noreg``)."""
    p = np.asarray([1.5 if v == 0 else v for v in preferences], dtype=float) - 1.0
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("every preference must lie between 1 and 2 (0 or 1.5 for a draw)")
    delta = np.asarray(baseline_lengths, dtype=float) - np.asarray(model_lengths, dtype=float)
    spread = delta.std(ddof=1) if len(delta) > 1 else 0.0
    tanh_length = np.tanh(delta / spread) if spread > 0 else np.zeros(len(delta))
    d = np.asarray(difficulty, dtype=float)
    features = np.column_stack([tanh_length, d, np.ones(len(p))])
    weight = np.ones(len(p))
    if gamed is not None:
        gamed_features = np.column_stack([gamed.tanh_length, gamed.difficulty, np.zeros(len(gamed.preference))])
        features = np.vstack([gamed_features, features])
        p = np.r_[gamed.preference, p]
        weight = np.r_[np.full(len(gamed.preference), GAMED_WEIGHT), weight]
    model, c = fit_preferences(features, p, weight)
    neutral = np.column_stack([np.zeros(len(d)), d, np.ones(len(d))])
    predicted = model.predict_proba(neutral)[:, 1]
    se = float(predicted.std(ddof=1) / math.sqrt(len(predicted)) * 100) if len(predicted) > 1 else None
    return LengthControlled(
        win_rate=float(predicted.mean() * 100), standard_error=se, weights=dict(zip(FEATURES, map(float, model.coef_[0]))), c=c
    )


@cache
def shipped() -> Difficulty:
    """The difficulty and gamed rows untuned ships for AlpacaEval's 805 instructions."""
    text = resources.files("untuned.report").joinpath("alpaca_eval_lc.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    column = lambda name: np.asarray([float(r[name]) for r in rows])  # noqa: E731
    difficulty = column("difficulty")
    gamed = GamedRows(
        tanh_length=np.r_[column("verbose_tanh_length"), column("concise_tanh_length")],
        difficulty=np.r_[difficulty, difficulty],
        preference=np.r_[column("verbose_preference"), column("concise_preference")],
    )
    return Difficulty(
        by_position=difficulty.tolist(),
        by_instruction={r["instruction"]: float(r["difficulty"]) for r in rows},
        gamed=gamed,
        source=SHIPPED,
    )


def read_df_gamed(path: str | Path) -> Difficulty:
    """AlpacaEval's own ``df_gamed.csv`` (Hugging Face dataset tatsu-lab/alpaca_eval): its gamed rows and
    the difficulty by instruction position (``index``) it carries."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(enumerate(csv.DictReader(handle), start=2))
    needed = {"index", "instruction_difficulty", "std_delta_len", "preference"}
    if not rows or not needed <= set(rows[0][1]):
        raise DataFileError(path, 1, f"AlpacaEval's df_gamed.csv has the columns {', '.join(sorted(needed))}")
    by_index: dict[int, float] = {}
    tanh_length, difficulty, preference = [], [], []
    for number, row in rows:
        try:
            index, d = int(row["index"]), float(row["instruction_difficulty"])
            t, p = math.tanh(float(row["std_delta_len"])), float(row["preference"])
        except ValueError:
            why = "index, instruction_difficulty, std_delta_len and preference must be numbers"
            raise DataFileError(path, number, why) from None
        by_index.setdefault(index, d)
        if not math.isnan(p):
            tanh_length.append(t)
            difficulty.append(d)
            preference.append(p)  # df_gamed holds preferences already in [0, 1]
    positions = [by_index[i] for i in sorted(by_index)]
    gamed = GamedRows(np.asarray(tanh_length), np.asarray(difficulty), np.asarray(preference))
    return Difficulty(by_position=positions, by_instruction={}, gamed=gamed, source=f"AlpacaEval's {path.name}")
