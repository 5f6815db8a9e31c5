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

The fit is scikit-learn's ``LogisticRegressionCV`` configured as AlpacaEval configures it (L1,
liblinear, ``random_state=123``, ``C`` among ten values from 1e-4 to 1e4 by 5-fold grouped
cross-validation of the weighted log loss); each preference p enters as a win with weight p and a loss
with weight 1 - p. The LC win rate is the mean predicted preference with the length feature set to 0,
over the model's items (those without a preference included, as in AlpacaEval); its standard error
(``lc_standard_error``) the standard error of that mean, as AlpacaEval reports it. Given the same rows
in the same order, the same difficulty and gamed rows, the number equals AlpacaEval's own code's
(tests/test_references.py calls it).

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

from untuned.errors import DataFileError, InvalidInput

GAMED_WEIGHT = 0.2 / 2  # regularize_to_baseline_lambda, shared by the two gamed baselines
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


def _soft_log_loss(y_true, y_pred, true_prob, true_sample_weight=None) -> float:
    """The weighted log loss of soft targets: a duplicated row of label 1 stands for p, of label 0 for 1 - p
    (the scorer AlpacaEval gives its cross-validation)."""
    target = np.where(y_true == 1, true_prob, 1 - true_prob)
    predicted = np.clip(y_pred, 1e-15, 1 - 1e-15)
    losses = target * np.log(predicted) + (1 - target) * np.log(1 - predicted)
    if true_sample_weight is not None:
        losses = losses * true_sample_weight
    return float(-np.mean(losses))


def _cross_validated():
    """scikit-learn's LogisticRegressionCV as AlpacaEval configures it: L1 (liblinear), no intercept, ten
    values of C, five grouped folds, the soft log loss; ``random_state`` 123 drawn on as scikit-learn draws
    it (one random state per fold, across the values of C)."""
    import sklearn
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    scorer = make_scorer(_soft_log_loss, response_method="predict_proba", greater_is_better=False)
    scorer = scorer.set_score_request(true_sample_weight=True, true_prob=True)
    major, minor = (int(part) for part in sklearn.__version__.split(".")[:2])
    l1 = {"l1_ratios": (1.0,), "use_legacy_attributes": True} if (major, minor) >= (1, 10) else {"penalty": "l1"}
    model = LogisticRegressionCV(
        cv=GroupKFold(n_splits=FOLDS),
        scoring=scorer,
        random_state=SEED,
        dual=False,
        solver="liblinear",
        n_jobs=None,
        fit_intercept=False,
        **l1,
    )
    return model.set_fit_request(sample_weight=True)


def fit_preferences(features: np.ndarray, preference: np.ndarray, weight: np.ndarray):
    """AlpacaEval's ``fit_LogisticRegressionCV`` for soft labels ``preference`` in [0, 1]: every row once
    with label 1 (weight p) and once with label 0 (weight 1 - p), all the ones first, the two copies of a
    row in one group of the folds; returns (model, the C chosen)."""
    import warnings

    import sklearn

    n = len(preference)
    x = np.vstack([features, features])
    label = np.r_[np.ones(n), np.zeros(n)]
    true_prob = np.r_[preference, 1 - preference]
    true_weight = np.r_[weight, weight]
    groups = np.r_[np.arange(n), np.arange(n)]
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # penalty="l1", as AlpacaEval passes it, is deprecated
        model = _cross_validated().fit(
            x, label, sample_weight=true_prob * true_weight, groups=groups, true_sample_weight=true_weight, true_prob=true_prob
        )
    return model, float(np.ravel(model.C_)[0])


def length_controlled(
    preferences: Sequence[float | None],
    model_lengths: Sequence[int],
    baseline_lengths: Sequence[int],
    difficulty: Sequence[float],
    *,
    gamed: GamedRows | None,
) -> LengthControlled:
    """AlpacaEval's LC win rate of one model against the baseline, computed as its ``glm_winrate.py`` does:
    ``preferences`` in AlpacaEval's encoding (1-2, 0 or 1.5 a draw; None where the judge gave none), answer
    lengths in characters, each item's instruction difficulty, and the gamed baselines' rows (None: fit
    without them, as AlpacaEval's ``length_controlled_noreg``). As there, a row without a preference still
    counts in the length's standard deviation and in the mean prediction (it is only left out of the fit),
    and the rows' order is the fit's (the folds are made in that order)."""
    p = np.asarray([np.nan if v is None else 1.5 if v == 0 else v for v in preferences], dtype=float) - 1.0
    if np.any((p < 0) | (p > 1)):
        raise InvalidInput("every preference must lie between 1 and 2 (0 or 1.5 for a draw)")
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
    known = ~np.isnan(p)
    model, c = fit_preferences(features[known], p[known], weight[known])
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
            t, p = math.tanh(float(row["std_delta_len"])), float(row["preference"] or "nan")  # empty: no preference
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
