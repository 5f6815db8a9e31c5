"""``pairwise``: two answers to one request, per aspect and overall, each asked in both orders (position bias
cancels); the orders are combined by untuned's rule (judge/outcomes.py), whose overall preference is
AlpacaEval's encoding: the win rates of the report."""

from __future__ import annotations

import time
from typing import Any

from untuned.errors import InvalidInput, ReplyError
from untuned.judge.mode import PAIRWISE_ASPECTS, RATIONALE, Asker, JudgeFailed, JudgeMode, aspect_lines, fenced
from untuned.judge.outcomes import combine_orders
from untuned.judge.parse import extract_json, field_of, rationale_of
from untuned.judge.sections import WIN_RATES
from untuned.judge.verdicts import PairwiseVerdict

WINNERS = {"a": "A", "answer a": "A", "b": "B", "answer b": "B", "tie": "tie", "equal": "tie"}


def read_winners(data: dict[str, Any], aspects: tuple[str, ...]) -> dict[str, Any]:
    """{"winners", "rationales"} per aspect of a reply's JSON: A, B or tie (as the judge wrote them, in order)."""
    winners, rationales = {}, {}
    for aspect in aspects:
        value = field_of(data, aspect)
        winner = (value.get("winner") if isinstance(value, dict) else value) or ""
        found = WINNERS.get(str(winner).strip().strip(".").lower())
        if found is None:
            raise ReplyError(f"{aspect}: winner must be A, B or tie")
        winners[aspect], rationales[aspect] = found, rationale_of(value)
    return {"winners": winners, "rationales": rationales}


def swap(winners: dict[str, str]) -> dict[str, str]:
    """Winners asked with the answers swapped, told from the first answer's side."""
    return {a: {"A": "B", "B": "A"}.get(w, w) for a, w in winners.items()}


class PairwiseMode(JudgeMode):
    needs_second = True
    requests_per_item = 2
    section = WIN_RATES
    record = PairwiseVerdict
    summary = "Compare two answers per aspect and overall, in both orders."

    def schema(self) -> dict:
        entry = {
            "type": "object",
            "properties": {"rationale": RATIONALE, "winner": {"type": "string", "enum": ["A", "B", "tie"]}},
            "required": ["rationale", "winner"],
        }
        return {"type": "object", "properties": {name: entry for name in self.aspects}, "required": list(self.aspects)}

    def instructions(self) -> str:
        example = ", ".join(f'"{name}": {{"rationale": "...", "winner": "A"}}' for name in self.aspects[:2])
        return (
            "You are given a user request and two answers to it, A and B. For each aspect, say which answer is "
            "better (A or B), or tie when neither is. Judge the content, not the length or the order of the "
            f"answers.\n\nAspects:\n{aspect_lines(self.aspects)}\n\n"
            "For each aspect give a one-sentence rationale, then the winner. "
            f"Reply with one JSON object with a key per aspect, like {{{example}, ...}}"
        )

    def item(self, query: str, answer: str, other: str) -> str:
        return f"{fenced('Request', query)}\n\n{fenced('Answer A', answer)}\n\n{fenced('Answer B', other)}"

    def parse(self, text: str) -> dict[str, Any]:
        return read_winners(extract_json(text), self.aspects)

    def judge(self, judge: Asker, item: Any, second: Any = None) -> Any:
        """Both orders asked; an aspect's outcome combines them (a win in one order and a tie in the other is a win)."""
        if second is None:
            raise InvalidInput("pairwise judging needs the second answer")
        started = time.perf_counter()
        base = judge.verdict_base(item, second)
        try:
            first, n1, c1 = judge.ask_about(item.query, item.answer, second.answer)
            swapped_order, n2, c2 = judge.ask_about(item.query, second.answer, item.answer)
        except JudgeFailed as exc:
            return judge.failed(base, exc, started)
        swapped = swap(swapped_order["winners"])
        combined = {a: combine_orders([w, swapped[a]]) for a, w in first["winners"].items()}
        return judge.verdict(
            base,
            started,
            status="scored",
            winners={a: outcome for a, (outcome, _) in combined.items()},
            orders=[first["winners"], swapped],
            rationales={a: f"{first['rationales'][a]} | {swapped_order['rationales'][a]}" for a in combined},
            preference=combined["overall"][1] if "overall" in combined else None,
            attempts=n1 + n2,
            cached=c1 and c2,
        )


MODE = PairwiseMode("pairwise", "3", PAIRWISE_ASPECTS)
