"""The statistics of a report, each checked against an independent computation on a hand-made fixture."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from untuned.report.stats import (
    agreement,
    bootstrap_interval,
    compare,
    compare_aspects,
    diagnose,
    holm,
    length_controlled_win_rate,
    win_rate,
)


def test_win_rate_is_alpaca_evals_arithmetic():
    preferences = [2, 1, 1.5, "2", 1.75, None, "x", 0, 2.5, 1.25]
    # by hand: 0 is a draw (1.5); None, "x" and 2.5 are not preferences and are dropped
    kept = [2, 1, 1.5, 2, 1.75, 1.5, 1.25]
    shifted = [p - 1 for p in kept]
    found = win_rate(preferences)
    assert found.win_rate == pytest.approx(100 * sum(shifted) / 7)
    assert found.standard_error == pytest.approx(100 * statistics.stdev(shifted) / math.sqrt(7))
    assert (found.n_wins, found.n_wins_base, found.n_draws, found.n_total) == (3, 2, 2, 7)
    # discrete: 1.75 -> win, 1.25 -> loss, draws stay half
    assert found.discrete_win_rate == pytest.approx(100 * (1 + 0 + 0.5 + 1 + 1 + 0.5 + 0) / 7)
    assert win_rate([]).n_total == 0 and win_rate([2]).standard_error is None


def _newton_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float) -> np.ndarray:
    """Minimise c * sum w * logloss + |beta|^2 / 2 by Newton's method (scikit-learn's objective)."""
    beta = np.zeros(x.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-x @ beta))
        gradient = c * x.T @ (w * (p - y)) + beta
        hessian = c * (x.T * (w * p * (1 - p))) @ x + np.eye(len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-12:
            break
    return beta


def test_length_controlled_win_rate_matches_an_independent_fit():
    rng = np.random.default_rng(7)
    n = 60
    model_len = rng.integers(100, 2000, n)
    base_len = rng.integers(100, 2000, n)
    # a judge that likes length: the longer answer tends to win
    p_model = 1 / (1 + np.exp(-(model_len - base_len) / 400))
    preferences = np.where(rng.random(n) < p_model, 2.0, 1.0)
    preferences[:5] = 1.5
    found = length_controlled_win_rate(preferences.tolist(), model_len.tolist(), base_len.tolist())

    delta = (base_len - model_len).astype(float)
    x = np.column_stack([np.ones(n), np.tanh(delta / delta.std(ddof=1))])
    p = preferences - 1
    beta = _newton_logistic(np.vstack([x, x]), np.r_[np.ones(n), np.zeros(n)], np.r_[p, 1 - p], 100.0)
    expected = 100 / (1 + math.exp(-beta[0]))
    assert found == pytest.approx(expected, abs=0.05)
    assert beta[1] < 0  # the baseline's extra length costs the model: the fit saw the bias


def test_length_controlled_win_rate_removes_a_pure_length_effect():
    # the model wins exactly when it is longer, and it is longer on most items
    model_len = [900, 800, 1000, 1200, 950, 300, 1100, 870]
    base_len = [500, 500, 500, 500, 500, 500, 500, 500]
    preferences = [2.0 if m > b else 1.0 for m, b in zip(model_len, base_len)]
    raw = win_rate(preferences).win_rate
    controlled = length_controlled_win_rate(preferences, model_len, base_len)
    assert raw == pytest.approx(87.5) and abs(controlled - 50) < abs(raw - 50)


def test_bootstrap_interval_with_a_fixed_seed_is_reproducible_and_right():
    differences = [0.5, 1.0, -0.5, 2.0, 1.5, 0.0, 1.0, 0.5, 1.5, -1.0, 2.5, 1.0]
    low, high = bootstrap_interval(differences, resamples=4000, seed=11)
    assert (low, high) == bootstrap_interval(differences, resamples=4000, seed=11)
    # independent: the same resampling, one resample at a time
    rng = np.random.default_rng(11)
    values = np.asarray(differences)
    means = sorted(values[rng.integers(0, len(values), size=len(values))].mean() for _ in range(4000))
    assert low == pytest.approx(np.percentile(means, 2.5)) and high == pytest.approx(np.percentile(means, 97.5))
    # and near the normal interval for a sample this regular
    half = 1.96 * statistics.stdev(differences) / math.sqrt(len(differences))
    assert low == pytest.approx(statistics.mean(differences) - half, abs=0.15)
    assert high == pytest.approx(statistics.mean(differences) + half, abs=0.15)


def test_wilcoxon_p_value_is_scipys_documented_example_and_exact_enumeration():
    d = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]
    result = compare("x", d, [0] * len(d))
    assert result.p_value == pytest.approx(0.0413, abs=5e-5)  # scipy.stats.wilcoxon's documentation
    # independent: the exact two-sided p-value by enumerating all 2^15 sign patterns of the ranks 1..15
    ranks = range(1, 16)
    observed = 10 + 14  # the ranks of |-48| and |-67|
    at_most = sum(1 for signs in itertools.product((0, 1), repeat=15) if sum(r for r, s in zip(ranks, signs) if s) <= observed)
    assert result.p_value == pytest.approx(2 * at_most / 2**15)
    assert result.difference == pytest.approx(statistics.mean(d))


def test_holm_adjustment_by_hand():
    # sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04, raised to 0.06 to keep the order
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_paired_comparison_says_better_worse_or_no_evidence():
    rng = np.random.default_rng(3)
    base = rng.integers(1, 6, 40).astype(float)
    results = {r.aspect: r for r in compare_aspects({
        "better": (np.minimum(base + 1, 5).tolist(), base.tolist()),
        "worse": (base.tolist(), np.minimum(base + 1, 5).tolist()),
        "same": (base.tolist(), np.roll(base, 1).tolist()),
        "identical": (base.tolist(), base.tolist()),
    })}  # fmt: skip
    assert results["better"].verdict == "significantly better" and results["better"].ci_low > 0
    assert results["worse"].verdict == "significantly worse" and results["worse"].ci_high < 0
    assert results["same"].verdict == "no evidence"
    assert results["identical"].p_value is None and results["identical"].verdict == "no evidence"
    assert results["better"].p_holm >= results["better"].p_value


def _ranks(values: list[float]) -> list[float]:
    order = sorted(values)
    return [sum(i + 1 for i, v in enumerate(order) if v == x) / order.count(x) for x in values]


def test_agreement_by_hand():
    ours = [1, 2, 3, 4, 5, 5, 2, 3]
    reference = [1, 2, 3, 5, 4, 5, 3, 1]
    found = agreement("helpfulness", ours, reference)
    assert found.exact == pytest.approx(4 / 8) and found.within_one == pytest.approx(7 / 8)
    rx, ry = _ranks(ours), _ranks(reference)
    assert found.spearman == pytest.approx(statistics.correlation(rx, ry))
    # quadratic-weighted kappa: 1 - sum(w * observed) / sum(w * expected), w = (i - j)^2 / (k - 1)^2
    labels = sorted(set(ours) | set(reference))
    k = len(labels)
    observed = np.zeros((k, k))
    for a, b in zip(ours, reference):
        observed[labels.index(a), labels.index(b)] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / len(ours)
    weights = np.array([[(i - j) ** 2 for j in range(k)] for i in range(k)]) / (k - 1) ** 2
    assert found.weighted_kappa == pytest.approx(1 - (weights * observed).sum() / (weights * expected).sum())
    flat = agreement("clarity", [4, 4, 4], [3, 5, 4])
    assert flat.spearman is None and flat.exact == pytest.approx(1 / 3)


def test_diagnosis_flags_a_judge_that_says_the_same_thing():
    flat = diagnose("helpfulness", [4, 4, 4, 4, 4, 4], [10, 50, 30, 80, 5, 60])
    assert flat.uninformative and flat.most_common_score == 4 and flat.length_spearman is None
    mostly = diagnose("depth", [4] * 9 + [3], list(range(10)))
    assert mostly.uninformative and mostly.most_common_share == pytest.approx(0.9)
    varied = diagnose("depth", [1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert not varied.uninformative and varied.length_spearman == pytest.approx(1.0)
