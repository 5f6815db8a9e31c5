"""The statistics of judging, below both the judge (calibration) and the report: win rates as
AlpacaEval computes them, paired comparisons of two models judged on the same items, agreement of two
judges, and diagnostics of the judge itself.

Win rates take AlpacaEval's preference encoding: 2 = the model's answer is preferred, 1 = the
baseline's, 1.5 (or 0) = a draw, anything between = a weighted preference.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from untuned.errors import InvalidInput

BOOTSTRAP_SEED = 20261125


def read_preference(value: Any) -> float | None:
    """An AlpacaEval preference as a float in [1, 2] (2 = the model's answer preferred, 1 = the baseline's;
    0 and 1.5 = a draw), from a number or a string; None for anything else."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    number = 1.5 if number == 0 else number
    return number if 1.0 <= number <= 2.0 else None


class WinRate(BaseModel):
    """Head-to-head numbers of a model against a baseline, as AlpacaEval's leaderboard gives them."""

    win_rate: float = Field(description="Mean preference for the model, in percent (draws count half).")
    standard_error: float | None = Field(description="Standard error of that mean, in percent.")
    discrete_win_rate: float = Field(description="The same with each preference rounded to a win, loss or draw.")
    n_wins: int
    n_wins_base: int
    n_draws: int
    n_total: int
    length_controlled: float | None = Field(
        None,
        description="AlpacaEval's length-controlled win rate (its GLM length_controlled_v1), for items that are AlpacaEval's.",
    )
    lc_standard_error: float | None = Field(None, description="Its standard error, as AlpacaEval reports it.")
    lc_source: str | None = Field(None, description="Where the difficulty and gamed-baseline rows came from.")
    lc_missing: str | None = Field(None, description="Why there is no LC (items that are not AlpacaEval's, too few).")


def _preferences(values: Sequence[float | str | None]) -> np.ndarray:
    """Preferences as floats in [1, 2] (draws 1.5); values that are not preferences are dropped."""
    found = (read_preference(value) for value in values)
    return np.asarray([p for p in found if p is not None], dtype=float)


def discrete_win_rate(preferences: Sequence[float | str | None]) -> float:
    """AlpacaEval's discrete win rate (its ZeroOneScoringRule): every value rounded first, half to even, 1.5 and
    0 a draw, and only then the values outside [1, 2] dropped; so 2.5 is a win and 0.4 a draw (NaN if none is
    left)."""
    numbers = []
    for value in preferences:
        try:
            numbers.append(float(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    values = np.asarray([v for v in numbers if not math.isnan(v)], dtype=float)
    rounded = np.round(np.where(values == 1.5, 0.0, values))
    rounded = np.where(rounded == 0, 1.5, rounded)
    kept = rounded[(rounded >= 1) & (rounded <= 2)] - 1.0
    return float(kept.mean() * 100) if len(kept) else math.nan


def win_rate(preferences: Sequence[float | str | None]) -> WinRate:
    """AlpacaEval's head-to-head numbers: mean of (preference - 1) in percent, its standard error
    (sample standard deviation / sqrt n), wins (> 1.5), baseline wins (< 1.5), draws (exactly 1.5),
    and the discrete win rate of preferences rounded to 1, 1.5 or 2."""
    values = _preferences(preferences)
    shifted = values - 1.0
    n = len(shifted)
    if not n:
        return WinRate(
            win_rate=math.nan, standard_error=None, discrete_win_rate=math.nan, n_wins=0, n_wins_base=0, n_draws=0, n_total=0
        )
    return WinRate(
        win_rate=float(shifted.mean() * 100),
        standard_error=float(shifted.std(ddof=1) / math.sqrt(n) * 100) if n > 1 else None,
        discrete_win_rate=discrete_win_rate(preferences),
        n_wins=int((shifted > 0.5).sum()),
        n_wins_base=int((shifted < 0.5).sum()),
        n_draws=int((values == 1.5).sum()),
        n_total=n,
    )


EXACT_UP_TO = 20  # nonzero differences for which the sign-flip test enumerates every one of the 2^n flips
MONTE_CARLO_FLIPS = 100_000


class PairedComparison(BaseModel):
    """Model A minus model B on the items both were judged on, for one aspect.

    The verdict's test is the paired sign-flip permutation test of the mean difference (under no
    difference, each item's difference is as likely to have either sign): exact, over all 2^n flips, up
    to EXACT_UP_TO nonzero differences, Monte Carlo beyond (seeded). Its p is Holm-corrected across the
    aspects of a pair; the verdict is "significantly better/worse" only when that p is below alpha and
    the paired bootstrap 95% interval of the mean excludes 0, and never when even the smallest p the test
    can give at this n (``min_p``: 2 / 2^k for k nonzero differences) is not below alpha: at n = 5, five
    equal differences give p = 0.0625, "no evidence". Wilcoxon's signed-rank p (Pratt, normal
    approximation) is shown beside it for reference; it does not decide."""

    aspect: str
    n: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float = Field(description="Paired bootstrap 95% interval of the mean difference.")
    ci_high: float
    p_value: float | None = Field(
        description="Sign-flip permutation p of the mean difference (two-sided); None when every difference is 0."
    )
    p_method: str = Field("exact", description="exact (every flip enumerated) or monte-carlo (MONTE_CARLO_FLIPS draws).")
    min_p: float | None = Field(None, description="The smallest p the test can give with these many nonzero differences.")
    p_holm: float | None = Field(None, description="That p, Holm-corrected across the aspects compared.")
    p_wilcoxon: float | None = Field(None, description="Wilcoxon signed-rank p (Pratt, normal approximation), for reference.")
    verdict: str = Field("no evidence", description="significantly better / significantly worse / no evidence (for A).")


def bootstrap_means(differences: Sequence[float], *, resamples: int = 10_000, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """The mean of ``differences`` resampled with replacement, ``resamples`` times (seeded)."""
    values = np.asarray(differences, dtype=float)
    rng = np.random.default_rng(seed)
    return values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)


def bootstrap_interval(
    differences: Sequence[float], *, resamples: int = 10_000, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the mean of ``differences`` resampled with replacement."""
    means = bootstrap_means(differences, resamples=resamples, seed=seed)
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


def wilcoxon_p(differences: np.ndarray) -> float | None:
    """Wilcoxon signed-rank p, two-sided, zero differences kept (Pratt), normal approximation."""
    from scipy.stats import wilcoxon

    if not np.any(differences):
        return None
    return float(wilcoxon(differences, zero_method="pratt", correction=False, method="approx").pvalue)


def _exact_sign_flip_p(values: np.ndarray) -> float:
    """Two-sided p over all 2^n sign flips of ``values`` (n <= EXACT_UP_TO), as scipy's ``permutation_test``
    computes it exactly (the same tolerance for ties with the observed mean): the sums of the two halves'
    flips are added pairwise, so 2^20 flips take milliseconds."""
    half = len(values) // 2

    def flipped_sums(part: np.ndarray) -> np.ndarray:
        signs = 1 - 2 * ((np.arange(2 ** len(part))[:, None] >> np.arange(len(part))) & 1)
        return signs @ part

    null = (flipped_sums(values[:half])[:, None] + flipped_sums(values[half:])[None, :]).ravel() / len(values)
    observed = values.mean()
    gamma = abs(np.finfo(float).eps * 100 * observed)
    less, greater = np.mean(null <= observed + gamma), np.mean(null >= observed - gamma)
    return float(min(1.0, 2 * min(less, greater)))


def sign_flip_p(differences: Sequence[float], *, seed: int = BOOTSTRAP_SEED) -> tuple[float | None, str, float | None]:
    """Two-sided p of a zero mean difference by the paired sign-flip permutation test: exact (every flip)
    up to EXACT_UP_TO nonzero differences, else scipy's ``permutation_test`` with MONTE_CARLO_FLIPS draws.
    Returns (p, method, the smallest p possible); p None when every difference is 0."""
    values = np.asarray(differences, dtype=float)
    nonzero = values[values != 0]  # a zero difference is the same under either sign
    if not len(nonzero):
        return None, "exact", None
    if len(nonzero) <= EXACT_UP_TO:
        return _exact_sign_flip_p(nonzero), "exact", min(1.0, 2.0 / 2 ** len(nonzero))
    from scipy.stats import permutation_test

    result = permutation_test(
        (nonzero,),
        np.mean,
        permutation_type="samples",
        n_resamples=MONTE_CARLO_FLIPS,
        alternative="two-sided",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue), "monte-carlo", 2.0 / (MONTE_CARLO_FLIPS + 1)


def compare(aspect: str, a: Sequence[float], b: Sequence[float]) -> PairedComparison:
    """Paired comparison of two models' scores on the same items (``a[i]`` and ``b[i]`` judge item i)."""
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    means = bootstrap_means(diffs)
    p, method, smallest = sign_flip_p(diffs)
    return PairedComparison(
        aspect=aspect,
        n=len(diffs),
        mean_a=float(np.mean(a)),
        mean_b=float(np.mean(b)),
        difference=float(diffs.mean()),
        ci_low=float(np.percentile(means, 2.5)),
        ci_high=float(np.percentile(means, 97.5)),
        p_value=p,
        p_method=method,
        min_p=smallest,
        p_wilcoxon=wilcoxon_p(diffs),
    )


def compare_aspects(pairs: dict[str, tuple[list[float], list[float]]], *, alpha: float = 0.05) -> list[PairedComparison]:
    """One paired comparison per aspect, Holm-corrected across them, with a verdict for model A."""
    results = [compare(aspect, a, b) for aspect, (a, b) in pairs.items() if len(a) >= 2]
    for result, adjusted in zip(results, holm([r.p_value for r in results])):
        result.p_holm = adjusted
        excludes_zero = result.ci_low > 0 or result.ci_high < 0
        reachable = result.min_p is not None and result.min_p < alpha
        if adjusted is not None and adjusted < alpha and excludes_zero and reachable:
            result.verdict = "significantly better" if result.difference > 0 else "significantly worse"
    return results


class AspectDiagnostics(BaseModel):
    """How much a judge's scores of one aspect of one model can tell."""

    aspect: str
    n: int
    most_common_score: float | None = Field(description="The score given most often.")
    most_common_share: float = Field(description="Share of items given the most common score.")
    concentration: Literal["ceiling", "floor", "constant"] | None = Field(
        None,
        description="(Nearly) every item got the "
        "same score: the top of the scale (a ceiling: the answers are as good as the scale says, and models cannot be "
        "told apart), the bottom (a floor), or a score between (the judge's scores carry no information).",
    )
    length_spearman: float | None = Field(description="Spearman correlation of answer length (words) and score.")

    @property
    def uninformative(self) -> bool:
        """A constant score between the ends of the scale: it says nothing about the answers."""
        return self.concentration == "constant"


def diagnose(
    aspect: str, scores: Sequence[float], lengths: Sequence[int], *, top: float = 5, bottom: float = 1, threshold: float = 0.9
) -> AspectDiagnostics:
    """How informative one aspect's scores are: the share of the most common score (concentrated when it
    reaches ``threshold`` on 3 items or more: at ``top`` a ceiling, at ``bottom`` a floor, else constant),
    and the Spearman correlation of score and length."""
    from scipy.stats import spearmanr

    n = len(scores)
    common, count = Counter(scores).most_common(1)[0] if n else (None, 0)
    share = count / n if n else 0.0
    rho = None
    if n >= 3 and len(set(scores)) > 1 and len(set(lengths)) > 1:
        rho = float(spearmanr(lengths, scores).statistic)
    concentration = None
    if n >= 3 and share >= threshold:
        concentration = "ceiling" if common == top else "floor" if common == bottom else "constant"
    return AspectDiagnostics(
        aspect=aspect, n=n, most_common_score=common, most_common_share=share, concentration=concentration, length_spearman=rho
    )


class Agreement(BaseModel):
    """How far a judge's scores of one aspect agree with reference scores (e.g. GPT-4's) of the same items."""

    aspect: str
    n: int
    spearman: float | None
    exact: float
    within_one: float
    weighted_kappa: float | None = Field(description="Cohen's kappa with quadratic weights.")


def agreement(aspect: str, ours: Sequence[int], reference: Sequence[int], *, scale: Sequence[int] = range(1, 6)) -> Agreement:
    """Agreement of two judges' integer scores; the weighted kappa's weights span the whole ``scale``
    (1-5, or 1-10 for MT-bench), not only the scores that happen to occur."""
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(ours), np.asarray(reference)
    outside = sorted((set(a.tolist()) | set(b.tolist())) - set(scale))
    if outside:
        raise InvalidInput(f"scores {outside} lie outside the scale {min(scale)}-{max(scale)}")
    varied = len(set(a.tolist())) > 1 and len(set(b.tolist())) > 1
    kappa = None
    if len(set(a.tolist()) | set(b.tolist())) > 1:
        kappa = float(cohen_kappa_score(a, b, labels=list(scale), weights="quadratic"))
    return Agreement(
        aspect=aspect,
        n=len(a),
        spearman=float(spearmanr(a, b).statistic) if varied else None,
        exact=float((a == b).mean()),
        within_one=float((np.abs(a - b) <= 1).mean()),
        weighted_kappa=kappa,
    )
