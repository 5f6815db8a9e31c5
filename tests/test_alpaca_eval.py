"""AlpacaEval's length-controlled win rate against AlpacaEval's published figures, on two models'
published verdicts cut into tests/fixtures/alpaca_eval (the whole table: bench/alpaca_eval_lc.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from untuned.judge import Verdict
from untuned.judge.verdicts import make_verdict
from untuned.report import build_report, to_markdown
from untuned.report.alpaca_eval import read_df_gamed, shipped
from untuned.report.sections import win_rates

FIXTURES = Path(__file__).parent / "fixtures" / "alpaca_eval"
PUBLISHED_LC = {"vicuna-7b": 6.2772, "text_davinci_001": 9.0257}  # leaderboard.csv, length_controlled_winrate


def verdicts(model: str, *, as_alpaca_eval_file: bool) -> list[Verdict]:
    """The fixture's verdicts, as read from AlpacaEval's annotations.json (id = row position in the file)
    or as untuned's own pairwise verdicts (id and query of the instruction); answers of the right length."""
    rows = [json.loads(line) for line in (FIXTURES / f"{model}.jsonl").read_text().splitlines()]
    texts = list(shipped().by_instruction)
    return [
        make_verdict(
            id=str(index if as_alpaca_eval_file else row["position"]),
            mode="pairwise",
            judge="gpt-4-turbo",
            template="alpaca-eval:weighted_alpaca_eval_gpt4_turbo" if as_alpaca_eval_file else "pairwise@1",
            status="scored",
            generator=model,
            generator_b="gpt4_1106_preview",
            query=texts[row["position"]],
            answer="x" * row["chars_model"],
            answer_b="y" * row["chars_baseline"],
            preference=row["preference"],
            by_position=as_alpaca_eval_file,
        )
        for index, row in enumerate(rows)
    ]


def test_shipped_difficulty_covers_alpaca_evals_805_instructions():
    data = shipped()
    assert len(data.by_position) == len(data.by_instruction) == 805
    assert len(data.gamed.preference) == 2 * 805 and ((0 < data.gamed.preference) & (data.gamed.preference < 1)).all()


def test_lc_of_a_complete_file_is_alpaca_evals_published_figure():
    (row,) = win_rates(verdicts("vicuna-7b", as_alpaca_eval_file=True))
    assert row.rate.win_rate == pytest.approx(4.1634, abs=1e-3)  # published raw win rate, exactly
    assert row.rate.length_controlled == pytest.approx(PUBLISHED_LC["vicuna-7b"], abs=0.5)
    assert 0 < row.rate.lc_standard_error < 1 and row.rate.lc_missing is None
    # the same items as untuned's own verdicts: a complete file gives the difficulty of the same instructions
    (own,) = win_rates(verdicts("vicuna-7b", as_alpaca_eval_file=False))
    assert own.rate.length_controlled == pytest.approx(row.rate.length_controlled, abs=1e-9)
    # not AlpacaEval's own inputs: the report names it an approximation and says how far it is
    text = to_markdown(build_report(verdicts("vicuna-7b", as_alpaca_eval_file=True)))
    assert "LC (approximate): AlpacaEval 2's length-controlled GLM" in text and "2.08 at worst" in text


def test_lc_of_a_file_with_missing_rows_assigns_difficulty_by_position_as_alpaca_eval_does():
    """AlpacaEval ties the difficulty to the row's position in the annotations file; text_davinci_001
    lacks two rows, so every later row takes its neighbour's difficulty. Its published LC is only
    reproduced that way; untuned's own verdicts keep each instruction's difficulty."""
    (as_file,) = win_rates(verdicts("text_davinci_001", as_alpaca_eval_file=True))
    assert as_file.rate.n_total == 803
    assert as_file.rate.length_controlled == pytest.approx(PUBLISHED_LC["text_davinci_001"], abs=0.5)
    (own,) = win_rates(verdicts("text_davinci_001", as_alpaca_eval_file=False))
    assert abs(own.rate.length_controlled - PUBLISHED_LC["text_davinci_001"]) > 1.5


def test_items_that_are_not_alpaca_evals_get_no_lc_and_the_report_says_why():
    items = verdicts("vicuna-7b", as_alpaca_eval_file=False)[:60]
    items[7].query = "Not an AlpacaEval instruction"
    report = build_report(items)
    (row,) = report.win_rates
    assert row.rate.length_controlled is None and "not all AlpacaEval instructions" in row.rate.lc_missing
    text = to_markdown(report)
    assert "No LC for vicuna-7b vs gpt4_1106_preview: the items are not all AlpacaEval instructions" in text
    assert "| vicuna-7b | gpt4_1106_preview | 2.6 ± 1.8 | – | 3.3 |" in text  # the LC column stays empty
    (few,) = build_report(verdicts("vicuna-7b", as_alpaca_eval_file=True)[:9]).win_rates
    assert few.rate.length_controlled is None and few.rate.lc_missing == "fewer than 10 rows"


def test_alpaca_evals_own_df_gamed_replaces_the_shipped_data(tmp_path):
    lines = ["model,index,instruction_difficulty,not_gamed_baseline,std_delta_len,preference"]
    for kind, sign in (("verbose", -1), ("concise", 1)):
        lines += [
            f"gpt4_1106_preview_{kind},{i},{(i % 7 - 3) / 2},False,{sign * (0.5 + i % 3)},{0.3 + 0.05 * (i % 9)}"
            for i in range(40)
        ]
    path = tmp_path / "df_gamed.csv"
    path.write_text("\n".join(lines) + "\n")
    source = read_df_gamed(path)
    assert len(source.by_position) == 40 and len(source.gamed.preference) == 80
    items = verdicts("vicuna-7b", as_alpaca_eval_file=True)[:40]
    (row,) = win_rates(items, difficulty=source)
    assert row.rate.lc_source == "AlpacaEval's df_gamed.csv" and row.rate.length_controlled is not None
    assert "AlpacaEval's df_gamed.csv" in to_markdown(build_report(items, difficulty=source))
    (path.parent / "bad.csv").write_text("index,difficulty\n1,2\n")
    with pytest.raises(Exception, match="df_gamed.csv has the columns"):
        read_df_gamed(path.parent / "bad.csv")
