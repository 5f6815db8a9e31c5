"""The statistics of a report, each checked against an independent computation on a hand-made fixture."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from untuned.stats import (
    agreement,
    bootstrap_interval,
    compare,
    compare_aspects,
    diagnose,
    holm,
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
    # discrete, as AlpacaEval rounds: every number first (half to even; 1.5 and 0 draws), then those outside [1, 2]
    # dropped: 1.75 -> win, 1.25 -> loss, and 2.5 -> 2, a win (it is dropped from the mean above, not here)
    assert found.discrete_win_rate == pytest.approx(100 * (1 + 0 + 0.5 + 1 + 1 + 0.5 + 1 + 0) / 8)
    assert win_rate([]).n_total == 0 and win_rate([2]).standard_error is None


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


def test_wilcoxon_p_is_pratt_with_the_normal_approximation_computed_by_hand():
    d = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75, 0]
    result = compare("x", d, [0] * len(d))
    # Pratt: the zero takes rank 1 and drops out of both sums; ranks 2..16 for the rest, no ties
    n = len(d)
    negative = 11 + 15  # the ranks of |-48| and |-67| among all 16
    mean = (n * (n + 1) / 2 - 1) / 2  # the zero's rank 1 taken out of the expected sum of ranks
    variance = (n * (n + 1) * (2 * n + 1) - 1 * 2 * 3) / 24
    z = (negative - mean) / math.sqrt(variance)
    assert result.p_wilcoxon == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    assert result.difference == pytest.approx(statistics.mean(d))


def test_a_worse_model_is_never_called_significantly_better():
    """The counterexample of the evaluation issue: worse by 1 on 150 items, better by 4 on 40. The
    mean difference is +0.05 with an interval around 0, while Wilcoxon's p is small: the verdict
    follows the mean's interval, not Wilcoxon."""
    a = [3.0] * 150 + [5.0] * 40
    b = [4.0] * 150 + [1.0] * 40
    (result,) = compare_aspects({"helpfulness": (a, b)})
    assert result.difference == pytest.approx(10 / 190)
    assert result.ci_low < 0 < result.ci_high
    assert result.p_wilcoxon < 0.01 and result.p_value > 0.05
    assert result.verdict == "no evidence"


def test_the_verdict_agrees_with_the_interval_on_random_samples():
    rng = np.random.default_rng(5)
    for _ in range(40):
        n = int(rng.integers(5, 60))
        a, b = rng.integers(1, 6, n).astype(float), rng.integers(1, 6, n).astype(float)
        a += rng.choice([0.0, 1.0], n)  # sometimes a real difference
        (r,) = compare_aspects({"x": (a.tolist(), b.tolist())})
        if r.verdict == "significantly better":
            assert r.ci_low > 0 and r.difference > 0
        elif r.verdict == "significantly worse":
            assert r.ci_high < 0 and r.difference < 0
        else:
            assert r.ci_low <= 0 <= r.ci_high or r.p_holm is None or r.p_holm >= 0.05


def test_holm_adjustment_by_hand():
    # sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04, raised to 0.06 to keep the order
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_paired_comparison_says_better_worse_or_no_evidence():
    rng = np.random.default_rng(3)
    base = rng.integers(1, 6, 40).astype(float)
    results = {
        r.aspect: r
        for r in compare_aspects(
            {
                "better": (np.minimum(base + 1, 5).tolist(), base.tolist()),
                "worse": (base.tolist(), np.minimum(base + 1, 5).tolist()),
                "same": (base.tolist(), np.roll(base, 1).tolist()),
                "identical": (base.tolist(), base.tolist()),
            }
        )
    }
    assert results["better"].verdict == "significantly better" and results["better"].ci_low > 0
    assert results["worse"].verdict == "significantly worse" and results["worse"].ci_high < 0
    assert results["same"].verdict == "no evidence"
    assert results["identical"].p_value is None and results["identical"].verdict == "no evidence"
    assert results["better"].p_holm >= results["better"].p_value


def _ranks(values: list[float]) -> list[float]:
    order = sorted(values)
    return [sum(i + 1 for i, v in enumerate(order) if v == x) / order.count(x) for x in values]


def _quadratic_kappa(ours: list[int], reference: list[int], labels: list[int]) -> float:
    k = len(labels)
    observed = np.zeros((k, k))
    for a, b in zip(ours, reference):
        observed[labels.index(a), labels.index(b)] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / len(ours)
    weights = np.array([[(i - j) ** 2 for j in range(k)] for i in range(k)]) / (k - 1) ** 2
    return 1 - (weights * observed).sum() / (weights * expected).sum()


def test_agreement_by_hand():
    ours = [1, 2, 3, 4, 5, 5, 2, 3]
    reference = [1, 2, 3, 5, 4, 5, 3, 1]
    found = agreement("helpfulness", ours, reference)
    assert found.exact == pytest.approx(4 / 8) and found.within_one == pytest.approx(7 / 8)
    rx, ry = _ranks(ours), _ranks(reference)
    assert found.spearman == pytest.approx(statistics.correlation(rx, ry))
    # quadratic-weighted kappa: 1 - sum(w * observed) / sum(w * expected), w = (i - j)^2 / (k - 1)^2
    assert found.weighted_kappa == pytest.approx(_quadratic_kappa(ours, reference, [1, 2, 3, 4, 5]))
    flat = agreement("clarity", [4, 4, 4], [3, 5, 4])
    assert flat.spearman is None and flat.exact == pytest.approx(1 / 3)


def test_kappa_weighs_over_the_whole_scale_not_the_scores_that_occur():
    ours, reference = [2, 3, 5, 3, 2, 5, 3], [3, 3, 5, 2, 2, 3, 5]  # only 2, 3 and 5 occur
    whole = _quadratic_kappa(ours, reference, [1, 2, 3, 4, 5])
    occurring = _quadratic_kappa(ours, reference, [2, 3, 5])
    assert agreement("depth", ours, reference).weighted_kappa == pytest.approx(whole)
    assert whole != pytest.approx(occurring)
    ten = agreement("turn_1", [7, 8, 8, 7], [8, 8, 7, 7], scale=range(1, 11))
    assert ten.weighted_kappa == pytest.approx(_quadratic_kappa([7, 8, 8, 7], [8, 8, 7, 7], list(range(1, 11))))
    with pytest.raises(ValueError, match="outside the scale"):
        agreement("depth", [6, 1], [1, 1])


def test_diagnosis_flags_a_judge_that_says_the_same_thing():
    flat = diagnose("helpfulness", [4, 4, 4, 4, 4, 4], [10, 50, 30, 80, 5, 60])
    assert flat.uninformative and flat.most_common_score == 4 and flat.length_spearman is None
    mostly = diagnose("depth", [4] * 9 + [3], list(range(10)))
    assert mostly.uninformative and mostly.most_common_share == pytest.approx(0.9)
    varied = diagnose("depth", [1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert not varied.uninformative and varied.length_spearman == pytest.approx(1.0)


def test_a_top_score_on_nearly_every_item_is_a_ceiling_not_an_uninformative_judge():
    safety = diagnose("safety", [5] * 49 + [4], list(range(50)))
    assert safety.concentration == "ceiling" and not safety.uninformative
    floor = diagnose("depth", [1] * 10, list(range(10)))
    assert floor.concentration == "floor" and not floor.uninformative
    ten = diagnose("turn_1", [10] * 10, list(range(10)), top=10)
    assert ten.concentration == "ceiling"
    assert diagnose("turn_1", [5] * 10, list(range(10)), top=10).concentration == "constant"
