"""The statistics of a report: win rates as AlpacaEval computes them (and a length-controlled one),
paired comparisons of two models judged on the same items, and diagnostics of the judge itself.

Win rates take AlpacaEval's preference encoding: 2 = the model's answer is preferred, 1 = the
baseline's, 1.5 (or 0) = a draw, anything between = a weighted preference.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from untuned.judge.parse import read_preference

BOOTSTRAP_SEED = 20261125


class WinRate(BaseModel):
    """Head-to-head numbers of a model against a baseline, as AlpacaEval's leaderboard gives them."""

    win_rate: float = Field(description="Mean preference for the model, in percent (draws count half).")
    standard_error: float | None = Field(description="Standard error of that mean, in percent.")
    discrete_win_rate: float = Field(description="The same with each preference rounded to a win, loss or draw.")
    n_wins: int
    n_wins_base: int
    n_draws: int
    n_total: int
    length_controlled: float | None = Field(None, description="Win rate predicted with no length difference.")
    difficulty_term: bool = Field(False, description="The length-controlled fit had an instruction difficulty term.")


def _preferences(values: Sequence[float | str | None]) -> np.ndarray:
    """Preferences as floats in [1, 2] (draws 1.5); values that are not preferences are dropped."""
    found = (read_preference(value) for value in values)
    return np.asarray([p for p in found if p is not None], dtype=float)


def win_rate(preferences: Sequence[float | str | None]) -> WinRate:
    """AlpacaEval's head-to-head numbers: mean of (preference - 1) in percent, its standard error
    (sample standard deviation / sqrt n), wins (> 1.5), baseline wins (< 1.5), draws (exactly 1.5),
    and the discrete win rate of preferences rounded to 1, 1.5 or 2."""
    values = _preferences(preferences)
    shifted = values - 1.0
    n = len(shifted)
    if not n:
        return WinRate(win_rate=math.nan, standard_error=None, discrete_win_rate=math.nan, n_wins=0, n_wins_base=0,
                       n_draws=0, n_total=0)  # fmt: skip
    rounded = np.where(values == 1.5, 0.5, np.round(values) - 1.0)  # a draw stays a draw, the rest to win or loss
    return WinRate(
        win_rate=float(shifted.mean() * 100), standard_error=float(shifted.std(ddof=1) / math.sqrt(n) * 100) if n > 1 else None,
        discrete_win_rate=float(rounded.mean() * 100), n_wins=int((shifted > 0.5).sum()),
        n_wins_base=int((shifted < 0.5).sum()), n_draws=int((values == 1.5).sum()), n_total=n,
    )  # fmt: skip


def length_controlled_win_rate(
    preferences: Sequence[float], model_lengths: Sequence[int], baseline_lengths: Sequence[int],
    difficulty: Sequence[float] | None = None,
) -> float:  # fmt: skip
    """The win rate a logistic model of the preference predicts with no length difference, in percent.

    As AlpacaEval 2 does: P(model preferred) = sigmoid(theta + phi * tanh(delta / sd(delta)) [+ psi * d]),
    delta the baseline's length minus the model's (characters), each preference a weighted pair of a
    win and a loss; the length-controlled win rate is the mean of sigmoid(theta [+ psi * d]). What
    differs: AlpacaEval also fits its precomputed instruction difficulty d (pass it as ``difficulty``
    to use it) and regularises toward baselines of its own data with cross-validated L1; here a
    fixed, mild L2 penalty keeps the fit finite when one side always wins.
    """
    from sklearn.linear_model import LogisticRegression

    values = _preferences(preferences)
    if len(values) != len(preferences):
        raise ValueError("every item needs a preference between 1 and 2 for the length-controlled win rate")
    delta = np.asarray(baseline_lengths, dtype=float) - np.asarray(model_lengths, dtype=float)
    scale = delta.std(ddof=1) if len(delta) > 1 and delta.std(ddof=1) > 0 else 1.0
    columns = [np.ones(len(values)), np.tanh(delta / scale)]
    if difficulty is not None:
        columns.append(np.asarray(difficulty, dtype=float))
    features = np.column_stack(columns)
    p = values - 1.0  # P(model preferred)
    model = LogisticRegression(C=100.0, fit_intercept=False, max_iter=1000)
    model.fit(np.vstack([features, features]), np.r_[np.ones(len(p)), np.zeros(len(p))], sample_weight=np.r_[p, 1 - p])
    neutral = features.copy()
    neutral[:, 1] = 0.0
    return float(model.predict_proba(neutral)[:, 1].mean() * 100)


class PairedComparison(BaseModel):
    """Model A minus model B on the items both were judged on, for one aspect."""

    aspect: str
    n: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float = Field(description="Paired bootstrap 95% interval of the mean difference.")
    ci_high: float
    p_value: float | None = Field(description="Wilcoxon signed-rank (two-sided); None when every difference is 0.")
    p_holm: float | None = Field(None, description="Holm-corrected across the aspects compared.")
    verdict: str = Field("no evidence", description="significantly better / significantly worse / no evidence (for A).")


def bootstrap_interval(
    differences: Sequence[float], *, resamples: int = 10_000, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the mean of ``differences`` resampled with replacement."""
    values = np.asarray(differences, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None), in the input's order."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(sorted(present)):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[index] = running
    return adjusted


def compare(aspect: str, a: Sequence[float], b: Sequence[float]) -> PairedComparison:
    """Paired comparison of two models' scores on the same items (``a[i]`` and ``b[i]`` judge item i)."""
    from scipy.stats import wilcoxon

    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    low, high = bootstrap_interval(diffs)
    p_value = None if not np.any(diffs) else float(wilcoxon(diffs).pvalue)
    return PairedComparison(aspect=aspect, n=len(diffs), mean_a=float(np.mean(a)), mean_b=float(np.mean(b)),
                            difference=float(diffs.mean()), ci_low=low, ci_high=high, p_value=p_value)  # fmt: skip


def compare_aspects(pairs: dict[str, tuple[list[float], list[float]]], *, alpha: float = 0.05) -> list[PairedComparison]:
    """One paired comparison per aspect, Holm-corrected across them, with a verdict for model A."""
    results = [compare(aspect, a, b) for aspect, (a, b) in pairs.items() if len(a) >= 2]
    for result, adjusted in zip(results, holm([r.p_value for r in results])):
        result.p_holm = adjusted
        if adjusted is not None and adjusted < alpha:
            result.verdict = "significantly better" if result.difference > 0 else "significantly worse"
    return results


class AspectDiagnostics(BaseModel):
    """How much a judge's scores of one aspect of one model can tell."""

    aspect: str
    n: int
    most_common_score: float | None = Field(description="The score given most often.")
    most_common_share: float = Field(description="Share of items given the most common score.")
    uninformative: bool = Field(description="(Nearly) every item got the same score: the scores carry no information.")
    length_spearman: float | None = Field(description="Spearman correlation of answer length (words) and score.")


def diagnose(aspect: str, scores: Sequence[float], lengths: Sequence[int], *, threshold: float = 0.9) -> AspectDiagnostics:
    """How informative one aspect's scores are: the share of the most common score (``uninformative``
    when it reaches ``threshold`` on 3 items or more), and the Spearman correlation of score and length."""
    from scipy.stats import spearmanr

    n = len(scores)
    common, count = Counter(scores).most_common(1)[0] if n else (None, 0)
    share = count / n if n else 0.0
    rho = None
    if n >= 3 and len(set(scores)) > 1 and len(set(lengths)) > 1:
        rho = float(spearmanr(lengths, scores).statistic)
    return AspectDiagnostics(aspect=aspect, n=n, most_common_score=common, most_common_share=share,
                             uninformative=n >= 3 and share >= threshold,
                             length_spearman=rho)  # fmt: skip


class Agreement(BaseModel):
    """How far a judge's scores of one aspect agree with reference scores (e.g. GPT-4's) of the same items."""

    aspect: str
    n: int
    spearman: float | None
    exact: float
    within_one: float
    weighted_kappa: float | None = Field(description="Cohen's kappa with quadratic weights.")


def agreement(aspect: str, ours: Sequence[int], reference: Sequence[int]) -> Agreement:
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(ours), np.asarray(reference)
    varied = len(set(a.tolist())) > 1 and len(set(b.tolist())) > 1
    kappa = float(cohen_kappa_score(a, b, weights="quadratic")) if len(set(a.tolist()) | set(b.tolist())) > 1 else None
    return Agreement(aspect=aspect, n=len(a), spearman=float(spearmanr(a, b).statistic) if varied else None,
                     exact=float((a == b).mean()), within_one=float((np.abs(a - b) <= 1).mean()),
                     weighted_kappa=kappa)  # fmt: skip
