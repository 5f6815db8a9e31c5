"""``mt-bench-pair``: MT-bench pairwise, two models' answers to the same question compared turn by turn, each
turn asked in both orders (turn 2 with both conversations in view); the report counts them by FastChat's
rule (a win only when both orders agree: judge/outcomes.py), its show_result table."""

from __future__ import annotations

import time
from typing import Any

from untuned.benchmarks.mt_bench import MtBenchItem
from untuned.errors import InvalidInput
from untuned.judge.mode import RATIONALE, SYSTEM, TURNS, Asker, JudgeFailed, JudgeMode, fenced
from untuned.judge.modes.mt_bench import mt_bench_base
from untuned.judge.modes.pairwise import read_winners, swap
from untuned.judge.outcomes import fastchat_outcome
from untuned.judge.parse import extract_json
from untuned.judge.sections import MT_BENCH_PAIRWISE
from untuned.judge.verdicts import PairwiseVerdict

INSTRUCTIONS = (
    "You are given a user's conversation with two AI assistants, A and B, who answered the same questions. "
    "Say which assistant answered the user's question of turn {turn} better, considering how helpful, relevant, "
    "accurate and detailed the answer is, given the conversation before it; tie when neither is better. Judge the "
    "content, not the length or the order of the assistants.\n\n"
    'Reply with JSON: {{"rationale": "...", "winner": "A"}} (the winner: A, B or tie).'
)


def conversation(turns: list[str], outputs: list[str], upto: int, name: str) -> str:
    parts = []
    for index in range(upto + 1):
        parts += [fenced(f"User, turn {index + 1}", turns[index]), fenced(f"Assistant {name}, turn {index + 1}", outputs[index])]
    return "\n\n".join(parts)


class MtBenchPairMode(JudgeMode):
    takes = "mt-bench"
    needs_second = True
    requests_per_item = 4
    section = MT_BENCH_PAIRWISE
    record = PairwiseVerdict
    summary = "Compare two models' MT-bench answers turn by turn, in both orders (FastChat's rule in the report)."

    def schema(self) -> dict:
        properties = {"rationale": RATIONALE, "winner": {"type": "string", "enum": ["A", "B", "tie"]}}
        return {"type": "object", "properties": properties, "required": ["rationale", "winner"]}

    def turn_messages(self, turns: list[str], a: list[str], b: list[str], turn: int) -> list[dict[str, str]]:
        item = f"{conversation(turns, a, turn, 'A')}\n\n{conversation(turns, b, turn, 'B')}"
        return [
            {"role": "system", "content": f"{SYSTEM}\n\n{INSTRUCTIONS.format(turn=turn + 1)}"},
            {"role": "user", "content": item},
        ]

    def parse(self, text: str) -> dict[str, Any]:
        return read_winners({"winner": extract_json(text)}, ("winner",))

    def judge(self, judge: Asker, item: Any, second: Any = None) -> Any:
        if not isinstance(item, MtBenchItem) or not isinstance(second, MtBenchItem):
            raise InvalidInput("mt-bench-pair judging takes two models' MtBenchItem records of one question")
        started = time.perf_counter()
        base = {**mt_bench_base(judge, item), "generator_b": second.generator, "answer_b": second.outputs[0]}
        for name in ("turns", "outputs", "reference"):
            base.pop(name)
        orders: list[dict[str, str]] = [{}, {}]
        rationales, attempts, cached = {}, 0, True
        try:
            for turn in range(min(len(item.turns), len(item.outputs), len(second.outputs), len(TURNS))):
                asked = []
                for a, b in ((item.outputs, second.outputs), (second.outputs, item.outputs)):
                    messages = self.turn_messages(list(item.turns), a, b, turn)
                    parsed, n, hit = judge.ask(messages, self.schema(), self.parse, messages[-1]["content"])
                    asked.append(parsed)
                    attempts, cached = attempts + n, cached and hit
                orders[0][TURNS[turn]] = asked[0]["winners"]["winner"]
                orders[1][TURNS[turn]] = swap(asked[1]["winners"])["winner"]
                rationales[TURNS[turn]] = " | ".join(p["rationales"]["winner"] for p in asked)
        except JudgeFailed as exc:
            return judge.failed(base, exc, started, attempts=attempts + exc.attempts)
        winners = {turn: fastchat_outcome([orders[0][turn], orders[1][turn]]) for turn in orders[0]}
        return judge.verdict(
            base,
            started,
            status="scored",
            winners=winners,
            orders=orders,
            rationales=rationales,
            attempts=attempts,
            cached=cached,
        )


MODE = MtBenchPairMode("mt-bench-pair", "1", TURNS)
