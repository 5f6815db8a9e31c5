"""AlpacaEval (tatsu-lab/alpaca_eval): 805 instructions, judged pairwise against a baseline (win rates, LC)."""

from __future__ import annotations

from untuned.benchmarks.base import Benchmark
from untuned.benchmarks.just_eval import reader

BENCHMARK = Benchmark(
    name="alpaca-eval",
    description="AlpacaEval: 805 instructions, a win rate against a baseline's answers",
    read_row=reader("alpaca-eval"),
    hub=("tatsu-lab/alpaca_eval", "alpaca_eval", "eval"),
    judge_modes=("pairwise",),
    sections=("win-rates",),
)
