"""Every number that bears a reference's name, computed by that reference's own code beside untuned's, on
files and samples drawn by hypothesis (issue 27; docs/numbers.md lists them).

- AlpacaEval 0.6.6 (``alpaca_eval.metrics``): win rate, its standard error, the discrete win rate, counts,
  and the length-controlled win rate and its error. Its LC downloads its difficulty and gamed-baseline
  table from the Hugging Face Hub at run time; here it gets a local df_gamed.csv instead (its download
  replaced), and untuned reads the same file (``report --difficulty``): the fit itself is compared.
- FastChat 0.2.36 (``fastchat.llm_judge``): show_result's single and pairwise tables, and the patterns its
  judge reads a score with.
- scipy: the exact sign-flip test of the paired verdict (``permutation_test``) and, for equal differences,
  the sign test (``binomtest``).
"""

from __future__ import annotations

import argparse
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from untuned.interop import load_verdicts
from untuned.report import build_report
from untuned.report.alpaca_eval import read_df_gamed
from untuned.stats import compare_aspects, sign_flip_p, win_rate

warnings.filterwarnings("ignore", category=FutureWarning)  # scikit-learn's, about how AlpacaEval calls it
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
# The profile decides whether draws repeat (derandomized in CI, fresh draws with HYPOTHESIS_PROFILE=explore): see
# conftest.py. The edges are explicit examples, drawn every time.
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
PREFERENCES = st.one_of(
    st.sampled_from([1, 2, 1.5, 0, 1.0, 2.0, None, "2", "1", "1.5", 2.5, 0.4, 0.6, 3, -1, 2.49]),
    st.floats(1, 2),
    st.floats(-1, 4, allow_nan=False),
)


# --- AlpacaEval ----------------------------------------------------------------------------------------


def alpaca_eval_winrate(preferences: list) -> dict:
    from alpaca_eval.metrics import get_winrate

    return get_winrate(pd.DataFrame({"preference": [np.nan if p is None else float(p) for p in preferences]}))


@SETTINGS
@given(st.lists(PREFERENCES, min_size=1, max_size=60))
@example([2.5, 2, 1])  # outside [1, 2]: AlpacaEval rounds before it drops (66.7, where dropping first gave 50)
@example([0.4, 2, 1])  # rounds to 0, a draw
@example([1.5] * 12)  # all ties
@example([None, None, 2])  # one preference
def test_win_rate_its_error_and_the_discrete_win_rate_are_alpaca_evals(preferences):
    theirs = alpaca_eval_winrate(preferences)
    ours = win_rate(preferences)
    if theirs["n_total"] == 0:
        assert ours.n_total == 0
        return
    assert ours.win_rate == pytest.approx(theirs["win_rate"], abs=1e-9)
    assert ours.discrete_win_rate == pytest.approx(theirs["discrete_win_rate"], abs=1e-9)
    if math.isnan(theirs["standard_error"]):
        assert ours.standard_error is None
    else:
        assert ours.standard_error == pytest.approx(theirs["standard_error"], abs=1e-9)
    counts = (ours.n_wins, ours.n_wins_base, ours.n_draws, ours.n_total)
    assert counts == (theirs["n_wins"], theirs["n_wins_base"], theirs["n_draws"], theirs["n_total"])


POSITIONS = 70  # instructions in the test's df_gamed.csv


@pytest.fixture(scope="module")
def df_gamed(tmp_path_factory):
    """A df_gamed.csv in AlpacaEval's layout: two gamed baselines, one block of rows each (difficulty by row
    position, as AlpacaEval reads it), some preferences missing."""
    rng = np.random.default_rng(20261206)
    difficulty = rng.normal(0, 1.4, POSITIONS)
    rows = []
    for model, side in (("gpt4_1106_preview_verbose", -1), ("gpt4_1106_preview_concise", 1)):
        for index in range(POSITIONS):
            preference = float(rng.uniform(0.2, 0.8)) if rng.uniform() > 0.05 else np.nan
            rows.append((model, index, difficulty[index], False, side * abs(rng.normal(1, 0.5)), preference))
    path = tmp_path_factory.mktemp("alpaca_eval") / "df_gamed.csv"
    columns = ["model", "index", "instruction_difficulty", "not_gamed_baseline", "std_delta_len", "preference"]
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


@st.composite
def annotation_sets(draw):
    """AlpacaEval annotations of one model against the baseline: any row count from 10, preferences with
    ties, draws written as 0, weighted ones, missing ones; rows in any order (the position is the row's)."""
    n = draw(st.integers(10, POSITIONS))
    preferences = draw(st.lists(st.sampled_from([1.0, 2.0, 1.5, 0.0, None]) | st.floats(1, 2), min_size=n, max_size=n))
    if not any(p is not None for p in preferences):
        preferences[0] = 2.0
    lengths = draw(st.lists(st.tuples(st.integers(1, 3000), st.integers(1, 3000)), min_size=n, max_size=n))
    # one length difference for every row has no spread: AlpacaEval's code divides by it and fails (untuned's
    # length feature is then 0); not a case to compare
    assume(len({model - baseline for model, baseline in lengths}) > 1)
    return annotation_rows(preferences, lengths)


def annotation_rows(preferences: list, lengths: list[tuple[int, int]]) -> list[dict]:
    return [
        {
            "instruction": f"instruction {i}",
            "output_1": "b" * baseline,
            "output_2": "m" * model,
            "generator_1": "gpt4_1106_preview",
            "generator_2": "model",
            "annotator": "weighted_alpaca_eval_gpt4_turbo",
            "preference": p,
        }
        for i, (p, (model, baseline)) in enumerate(zip(preferences, lengths))
    ]


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(annotation_sets())
@example(  # 11 rows, 9 preferences: AlpacaEval fits an LC (rows count, not preferences); untuned said "fewer than 10"
    annotation_rows([2.0, 1.0, None, 2.0, 1.5, 1.0, 2.0, None, 1.0, 2.0, 1.0], [(300 + 40 * i, 500 - 20 * i) for i in range(11)])
)
@example(annotation_rows([1.5] * 12, [(100 * i + 1, 400) for i in range(12)]))  # all ties
def test_the_length_controlled_win_rate_is_alpaca_evals_given_its_table(df_gamed, tmp_path_factory, rows):
    import alpaca_eval.metrics.glm_winrate as glm

    path = tmp_path_factory.mktemp("annotations") / "annotations.json"
    path.write_text(json.dumps(rows))
    (ours,) = build_report(load_verdicts(path), difficulty=read_df_gamed(df_gamed)).win_rates
    original = glm.hf_hub_download
    glm.hf_hub_download = lambda **_: str(df_gamed)  # AlpacaEval's table from the local file, not the Hub
    try:
        frame = pd.DataFrame(rows).assign(preference=lambda f: f["preference"].astype(float))
        theirs = glm.get_length_controlled_winrate(frame, save_weights_dir=None, is_warn_extreme_changes=False)
    finally:
        glm.hf_hub_download = original
    assert ours.rate.win_rate == pytest.approx(theirs["win_rate"], abs=1e-9)
    assert ours.rate.length_controlled == pytest.approx(theirs["length_controlled_winrate"], abs=1e-6)
    assert ours.rate.lc_standard_error == pytest.approx(theirs["lc_standard_error"], abs=1e-6)
    assert ours.rate.lc_source == f"AlpacaEval's {df_gamed.name}"


# --- FastChat ------------------------------------------------------------------------------------------


def show_result(function: str, path, **options) -> list[pd.DataFrame]:
    """The tables FastChat's show_result prints, taken as it prints them."""
    from fastchat.llm_judge import show_result as module

    printed: list = []
    module.print = lambda *items, **_: printed.extend(items)  # the module's print, not the builtin
    try:
        args = argparse.Namespace(input_file=str(path), bench_name="mt_bench", model_list=None, baseline_model=None, **options)
        getattr(module, function)(args)
    finally:
        del module.print
    return [item for item in printed if isinstance(item, pd.DataFrame)]


SCORES = st.sampled_from([-1, 1, 2, 3, 5, 7, 8, 9, 10, 6.5, 8.5])


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from(["m1", "m2"]), st.integers(81, 90), st.sampled_from([1, 2]), SCORES), min_size=1, max_size=50
    )
)
def test_mt_bench_single_scores_are_fastchats_show_result(tmp_path_factory, judgments):
    """Duplicated judgments, score -1 (unreadable), turn 2 failed while turn 1 scored: per model, the mean of
    each turn and of every row, as show_result prints them."""
    path = tmp_path_factory.mktemp("fastchat") / "gpt-4_single.jsonl"
    lines = [
        {"question_id": q, "model": m, "judge": ["gpt-4", "single-v1"], "user_prompt": "", "judgment": "", "score": s, "turn": t}
        for m, q, t, s in judgments
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ours = {m.model: m for m in build_report(load_verdicts(path)).mt_bench}
    turn_1, turn_2, overall = show_result("display_result_single", path)
    for model, row in overall.iterrows():
        assert ours[model].overall == pytest.approx(row["score"], abs=1e-9)
    for frame, turn in ((turn_1, "turn_1"), (turn_2, "turn_2")):
        for (model, _), row in frame.iterrows():
            assert ours[model].turns[turn] == pytest.approx(row["score"], abs=1e-9)
    scored = {m for m, _, _, s in judgments if s != -1}
    assert {m for m, o in ours.items() if o.overall is not None} == scored


WINNERS = st.sampled_from(["model_1", "model_2", "tie", "error"])


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from([("m1", "m2"), ("m2", "m1"), ("m1", "m3")]), st.integers(81, 160), WINNERS, WINNERS),
        min_size=1,
        max_size=75,
    )
)
def test_mt_bench_pairwise_is_fastchats_show_result(tmp_path_factory, judgments):
    """Judgments of pairs of models written by FastChat (orders that disagree, ties, error rows): win, loss,
    tie, win_rate, loss_rate and win_rate_adjusted per model, as show_result's pairwise-all table."""
    path = tmp_path_factory.mktemp("fastchat") / "gpt-4_pair.jsonl"
    lines = [
        {"question_id": q, "model_1": a, "model_2": b, "g1_winner": g1, "g2_winner": g2, "judge": ["gpt-4", "pair-v2"], "turn": 1}
        for (a, b), q, g1, g2 in judgments
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ours = {r.model: r for r in build_report(load_verdicts(path)).mt_bench_pairwise}
    if all("error" in (g1, g2) for _, _, g1, g2 in judgments):
        assert not ours
        return
    (theirs,) = show_result("display_result_pairwise", path)
    assert set(ours) == set(theirs.index)
    for model, row in theirs.iterrows():
        mine = ours[model]
        assert (mine.win, mine.loss, mine.tie) == (row["win"], row["loss"], row["tie"])
        for name in ("win_rate", "loss_rate", "win_rate_adjusted"):
            assert getattr(mine, name) == pytest.approx(row[name], abs=1e-12)


BRACKETED = st.builds(
    lambda left, number, right: f"{left}{number}{right}",
    st.sampled_from(["[[", "[", "[[ ", "((", ""]),
    st.one_of(
        st.integers(0, 120).map(str),
        st.floats(0, 20, allow_nan=False).map(lambda f: f"{f:.{len(str(f)) % 4}f}"),
        st.sampled_from(["7.", "007", "1e3", "-3", "8.5.5", "10.25"]),
    ),
    st.sampled_from(["]]", "]", " ]]", "]]]", ""]),
)
JUDGE_TEXT = st.lists(
    st.one_of(BRACKETED, st.text(max_size=12), st.sampled_from(['{"score": 4}', "Rating: 6", "\n"])), max_size=8
)


def fastchat_reads(text: str):
    """FastChat's own run_judge_single reading, on its own patterns: the rating, or the exception it raises."""
    import ast
    import re

    from fastchat.llm_judge.common import one_score_pattern, one_score_pattern_backup

    match = re.search(one_score_pattern, text) or re.search(one_score_pattern_backup, text)
    if not match:
        return -1
    try:
        return ast.literal_eval(match.groups()[0])
    except (ValueError, SyntaxError) as exc:
        return exc


@SETTINGS
@given(JUDGE_TEXT.map("".join))
@example("[[7.3]]")
@example("[[0]]")
@example("[[11]]")
@example('{"score": 4} and so [[9]]')
@example("[[007]]")
@example("")
def test_a_score_in_a_judges_text_is_read_as_fastchats_judge_reads_it(text):
    """fastchat_rating is FastChat's reading exactly, over arbitrary text with bracketed numbers of every kind
    (7.3, 0 and 11 as they are; a number Python cannot read fails in both); parse_mt_bench takes a "[[n]]" before
    anything else, so a JSON score beside it does not win."""
    from untuned.errors import ReplyError
    from untuned.judge.parse import FASTCHAT_SCORE, fastchat_rating, parse_mt_bench

    theirs = fastchat_reads(text)
    if isinstance(theirs, Exception):
        with pytest.raises(ReplyError):
            fastchat_rating(text)
        return
    assert fastchat_rating(text) == theirs and type(fastchat_rating(text)) is type(theirs)
    if FASTCHAT_SCORE.search(text):
        assert parse_mt_bench(text)[0] == theirs


# --- scipy: the paired verdict -------------------------------------------------------------------------


@SETTINGS
@given(st.lists(st.sampled_from([-4, -2, -1, -0.5, 0, 0.5, 1, 2, 3]), min_size=2, max_size=20))
def test_the_paired_verdicts_p_is_scipys_exact_sign_flip_test(differences):
    from scipy.stats import permutation_test

    nonzero = np.asarray([d for d in differences if d != 0], dtype=float)
    ours, method, smallest = sign_flip_p(differences)
    if len(nonzero) < 2:
        assert ours is None if not len(nonzero) else ours == 1.0
        return
    theirs = permutation_test((nonzero,), np.mean, permutation_type="samples", n_resamples=np.inf, vectorized=True).pvalue
    assert method == "exact" and ours == pytest.approx(theirs, abs=1e-12) and smallest == 2 / 2 ** len(nonzero)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 8])
def test_equal_differences_at_small_n_are_no_evidence_until_the_sign_test_says_otherwise(n):
    """n items all judged one point better: the exact test's p is the sign test's (binomtest), 0.0625 at
    n = 5: "no evidence" up to 5, with n in the verdict; from 6 the test can give p < 0.05."""
    from scipy.stats import binomtest

    from untuned.report.markdown import verdict_text

    (result,) = compare_aspects({"helpfulness": ([4.0] * n, [3.0] * n)})
    assert result.p_value == pytest.approx(binomtest(n, n, 0.5).pvalue, abs=1e-12)
    expected = "significantly better" if n >= 6 else "no evidence"
    assert result.verdict == expected and f"(n = {n}" in verdict_text(result)
    if n <= 5:
        assert "the smallest p possible at this n" in verdict_text(result)


def test_beyond_twenty_items_the_p_is_monte_carlo_and_close_to_the_exact_one():
    from untuned.stats import _exact_sign_flip_p

    differences = np.random.default_rng(5).normal(0.3, 1, 21)
    p, method, smallest = sign_flip_p(differences)
    assert method == "monte-carlo" and p == pytest.approx(_exact_sign_flip_p(differences), abs=0.01) and smallest < 1e-4


# --- just-eval's judged files ------------------------------------------------------------------------


def just_eval_record(index: int, **changes) -> dict:
    """A record as just-eval's judge writes it: parsed_result holds each aspect's "reason" and "score"."""
    record = {
        "id": index,
        "instruction": f"question {index}",
        "output_cand": f"answer {index}",
        "generator_cand": "model",
        "eval_config": {"mode": "score_multi", "gpt": "gpt-4-0314"},
        "parsed_result": {
            "helpfulness": {"reason": f"helpful because {index}", "score": "5"},
            "clarity": {"reason": "clear", "score": "4"},
        },
    }
    return {**record, **changes}


def test_just_evals_reasons_are_read_and_a_malformed_record_is_named(tmp_path):
    from untuned.errors import DataFileError

    path = tmp_path / "judged.json"
    path.write_text(json.dumps([just_eval_record(0), just_eval_record(1)]))
    verdicts = load_verdicts(path)
    assert [v.rationales["helpfulness"] for v in verdicts] == ["helpful because 0", "helpful because 1"]
    assert verdicts[0].scores == {"helpfulness": 5, "clarity": 4} and verdicts[0].judge == "gpt-4-0314"
    path.write_text(json.dumps([just_eval_record(0), just_eval_record(1, eval_config="score_multi")]))
    with pytest.raises(DataFileError, match=r"judged.json, line 1: record 1: eval_config is str 'score_multi'; just-eval"):
        load_verdicts(path)
    path.write_text(json.dumps([just_eval_record(0, output_cand=["not", "text"])]))
    with pytest.raises(DataFileError, match=r"record 0: answer is list, not text"):
        load_verdicts(path)


def just_evals_report(records: list[dict]) -> dict[str, float]:
    """just-eval's ``report`` (just_eval/evaluate.py, score_multi), written out here as it reads: every record
    with a parsed_result, each aspect's score through float(), "N/A" as 5.0, the plain mean (just-eval is
    not on PyPI, so its function cannot be imported; docs/numbers.md says so)."""
    scores: dict[str, list[float]] = {}
    for record in records:
        if "parsed_result" in record:
            for aspect, result in record["parsed_result"].items():
                scores.setdefault(aspect, []).append(5.0 if result["score"] == "N/A" else float(result["score"]))
    return {aspect: float(np.mean(values)) for aspect, values in scores.items()}


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from(["1", "2", "3", "4", "5", "N/A", "4.5", 3, 5.0]), st.sampled_from(["3", "N/A", "5"])),
        min_size=1,
        max_size=30,
    )
)
def test_just_evals_mean_with_na_five_is_just_evals_report(tmp_path_factory, scores):
    records = [
        just_eval_record(i, parsed_result={"helpfulness": {"reason": "", "score": h}, "depth": {"reason": "", "score": d}})
        for i, (h, d) in enumerate(scores)
    ]
    path = tmp_path_factory.mktemp("just_eval") / "judged.json"
    path.write_text(json.dumps(records))
    (model,) = build_report(load_verdicts(path), na="five").models
    for aspect, mean in just_evals_report(records).items():
        assert model.aspects[aspect].mean == pytest.approx(mean, abs=1e-12)
