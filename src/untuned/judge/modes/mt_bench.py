"""``mt-bench``: MT-bench single-answer grading, 1-10 per turn in its own request; turn 2 with the whole
conversation in view (only its answer scored); math, reasoning and coding against a reference answer.
A failure on turn 2 keeps turn 1's score (as FastChat keeps that turn's row)."""

from __future__ import annotations

import time
from typing import Any

from untuned.benchmarks.mt_bench import MtBenchItem
from untuned.errors import InvalidInput
from untuned.judge.mode import SYSTEM, TEN, TURNS, Asker, JudgeFailed, JudgeMode, fenced
from untuned.judge.parse import parse_mt_bench
from untuned.judge.sections import MT_BENCH
from untuned.judge.verdicts import MtBenchVerdict

_MT_BENCH_WEIGHING = (
    "Weigh how helpful, relevant and accurate it is, and its depth, creativity and level of detail where the "
    "question calls for them. Judge the content: an answer is not better for being longer."
)
_MT_BENCH_REFERENCE = (
    "A reference answer, known to be correct, is shown as well: check the assistant's answer against it and "
    "name the mistakes you find. A wrong final result is a serious fault, however well it is explained."
)
_MT_BENCH_ASK = (
    'First a short rationale (two or three sentences), then the score. Reply with JSON: {"rationale": "...", "score": "7"}'
)


def mt_bench_instructions(turn: int, reference: bool) -> str:
    if turn == 0:
        task = (
            "You are given a user's question and an AI assistant's answer. Rate the answer on a scale of 1 "
            "(useless) to 10 (excellent)."
        )
    else:
        task = (
            f"You are given a conversation between a user and an AI assistant. Rate only the assistant's answer "
            f"in turn {turn + 1}, on a scale of 1 (useless) to 10 (excellent), as a reply to what the user asked "
            "in that turn given the conversation before it."
        )
    extra = f" {_MT_BENCH_REFERENCE}" + (" Compare with the reference of the turn rated." if turn else "") if reference else ""
    return f"{task} {_MT_BENCH_WEIGHING}{extra}\n\n{_MT_BENCH_ASK}"


def mt_bench_item(turns: list[str], outputs: list[str], turn: int, reference: list[str] | None) -> str:
    if turn == 0:
        parts = [fenced("Question", turns[0])]
        if reference:
            parts.append(fenced("Reference answer", reference[0]))
        parts.append(fenced("Assistant's answer", outputs[0]))
        return "\n\n".join(parts)
    parts = []
    for index in range(turn + 1):
        parts.append(fenced(f"User, turn {index + 1}", turns[index]))
        if reference and index < len(reference):
            parts.append(fenced(f"Reference answer, turn {index + 1}", reference[index]))
        label = f"Assistant, turn {index + 1}" + (" (the answer to rate)" if index == turn else "")
        parts.append(fenced(label, outputs[index]))
    return "\n\n".join(parts)


def turn_messages(turns: list[str], outputs: list[str], turn: int, reference: list[str] | None = None) -> list[dict[str, str]]:
    """Messages asking for a 1-10 score of answer ``turn`` (0-based), the earlier turns in view."""
    return [
        {"role": "system", "content": f"{SYSTEM}\n\n{mt_bench_instructions(turn, bool(reference))}"},
        {"role": "user", "content": mt_bench_item(turns, outputs, turn, reference)},
    ]


class MtBenchMode(JudgeMode):
    takes = "mt-bench"
    requests_per_item = 2
    section = MT_BENCH
    record = MtBenchVerdict
    summary = "Grade MT-bench answers 1-10 per turn, with a rationale."

    def schema(self) -> dict:
        rationale = {"type": "string", "maxLength": 600}
        return {
            "type": "object",
            "properties": {"rationale": rationale, "score": {"type": "string", "enum": list(TEN)}},
            "required": ["rationale", "score"],
        }

    def turn_messages(self, turns: list[str], outputs: list[str], turn: int, reference: list[str] | None = None):
        return turn_messages(turns, outputs, turn, reference)

    def judge(self, judge: Asker, item: Any, second: Any = None) -> Any:
        if not isinstance(item, MtBenchItem):
            raise InvalidInput("mt-bench judging takes MtBenchItem records (interop.fastchat.read_mt_bench_answers)")
        started = time.perf_counter()
        base = mt_bench_base(judge, item)
        scores: dict[str, int | float | None] = {}
        rationales, attempts, cached = {}, 0, True
        try:
            for turn in range(min(len(item.turns), len(item.outputs), len(TURNS))):
                messages = turn_messages(item.turns, item.outputs, turn, item.reference or None)
                (score, rationale), n, hit = judge.ask(messages, self.schema(), parse_mt_bench, messages[-1]["content"])
                scores[TURNS[turn]], rationales[TURNS[turn]] = score, rationale
                attempts, cached = attempts + n, cached and hit
        except JudgeFailed as exc:  # the turns scored before the failure are kept, as FastChat keeps each turn's row
            exc.args = (f"{TURNS[len(scores)]}: {exc}",)
            return judge.failed(base, exc, started, scores=scores, rationales=rationales, attempts=attempts + exc.attempts)
        return judge.verdict(
            base, started, status="scored", scores=scores, rationales=rationales, attempts=attempts, cached=cached
        )


def mt_bench_base(judge: Asker, item: MtBenchItem) -> dict[str, Any]:
    """The fields of an MT-bench verdict that come from the item."""
    base = judge.verdict_base(item)
    base.update(
        dataset="mt-bench",
        query=item.turns[0],
        answer=item.outputs[0],
        turns=item.turns,
        outputs=item.outputs,
        reference=item.reference,
        tags={"category": [item.category]} if item.category else {},
    )
    return base


MODE = MtBenchMode("mt-bench", "2", TURNS)
