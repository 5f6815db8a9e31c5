"""Judge many answers: concurrent, cached, resumable, and never losing or inventing a verdict.

Every item ends as one :class:`Verdict` line in the output file, ``scored`` or ``failed`` (with
the judge's raw reply and the reason). A rerun skips items already scored in the file and asks
again for failed ones; replies already in the cache cost no request. A file holding verdicts of
another judge or template wording for the same mode is refused (``force`` sets it aside).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from untuned.errors import JudgeUnavailable, ReplyError
from untuned.judge.cache import JudgeCache, cache_key
from untuned.judge.models import JudgeModel
from untuned.judge.mt_bench import MtBenchItem
from untuned.judge.outcomes import combine_orders
from untuned.judge.parse import parse_mt_bench, parse_reply
from untuned.judge.templates import TURNS, Template
from untuned.judge.verdicts import JudgeSettings, Verdict, VerdictBase, VerdictFile, make_verdict
from untuned.runner import ResumableRun, RunSummary

if TYPE_CHECKING:
    from untuned.answers import AnswerItem

log = logging.getLogger(__name__)


class _Failed(Exception):
    def __init__(self, message: str, raw: str | None, attempts: int) -> None:
        super().__init__(message)
        self.raw, self.attempts = raw, attempts


class Judge:
    """A judge model, a template and a reply cache: :meth:`judge_item` one item, :meth:`run` many."""

    def __init__(self, model: JudgeModel, template: Template, cache: JudgeCache | None = None, *, parse_retries: int = 2) -> None:
        self.model, self.template, self.cache, self.parse_retries = model, template, cache, parse_retries
        self._count_lock = threading.Lock()
        self.requests = 0

    @property
    def settings(self) -> JudgeSettings:
        return JudgeSettings(judge=self.model.name, template=self.template.key)

    def close(self) -> None:
        """Close the judge model and the cache."""
        self.model.close()
        if self.cache is not None:
            self.cache.close()

    def _ask(
        self, messages: list[dict[str, str]], schema: dict, parse: Callable[[str], Any], *parts: str
    ) -> tuple[Any, int, bool]:
        """Parsed reply, requests made, whether it came from the cache (keyed by judge, template and ``parts``)."""
        key = cache_key(self.model.name, self.template.key, *parts)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return parse(hit), 0, True
        raw: str | None = None
        problem = ""
        for attempt in range(1, self.parse_retries + 2):
            with self._count_lock:
                self.requests += 1
            try:
                raw = self.model.reply(messages, schema)
            except JudgeUnavailable as exc:
                raise _Failed(str(exc), raw, attempt) from exc
            try:
                parsed = parse(raw)
            except ReplyError as exc:
                problem = str(exc)
                log.info("unparseable reply (attempt %d): %s", attempt, problem)
                continue
            if self.cache is not None:
                self.cache.put(key, judge=self.model.name, template=self.template.key, reply=raw)
            return parsed, attempt, False
        raise _Failed(f"no parseable reply after {self.parse_retries + 1} attempts: {problem}", raw, self.parse_retries + 1)

    def _ask_about(self, query: str, answer: str, other: str) -> tuple[dict[str, Any], int, bool]:
        return self._ask(
            self.template.messages(query, answer, other),
            self.template.schema(),
            lambda raw: parse_reply(self.template, raw),
            query,
            answer,
            other,
        )

    def _judge_mt_bench(self, item: MtBenchItem) -> Verdict:
        started = time.perf_counter()
        base = {
            "id": item.id,
            "mode": "mt-bench",
            "template": self.template.key,
            "judge": self.model.name,
            "generator": item.generator,
            "dataset": "mt-bench",
            "query": item.turns[0],
            "answer": item.outputs[0],
            "turns": item.turns,
            "outputs": item.outputs,
            "reference": item.reference,
            "tags": {"category": [item.category]} if item.category else {},
        }
        scores: dict[str, int | float | None] = {}
        rationales, attempts, cached = {}, 0, True
        try:
            for turn in range(min(len(item.turns), len(item.outputs), len(TURNS))):
                messages = self.template.turn_messages(item.turns, item.outputs, turn, item.reference or None)
                (score, rationale), n, hit = self._ask(messages, self.template.schema(), parse_mt_bench, messages[-1]["content"])
                scores[TURNS[turn]], rationales[TURNS[turn]] = score, rationale
                attempts, cached = attempts + n, cached and hit
        except _Failed as exc:  # the turns scored before the failure are kept, as FastChat keeps each turn's row
            return make_verdict(
                **base,
                status="failed",
                scores=scores,
                rationales=rationales,
                error=f"{TURNS[len(scores)]}: {exc}",
                raw=exc.raw,
                attempts=attempts + exc.attempts,
                seconds=time.perf_counter() - started,
            )
        return make_verdict(
            **base,
            status="scored",
            scores=scores,
            rationales=rationales,
            attempts=attempts,
            cached=cached,
            seconds=time.perf_counter() - started,
        )

    def _judge_pair(self, item: AnswerItem, second: AnswerItem, base: dict, started: float) -> Verdict:
        """Both orders asked; an aspect's outcome combines them (a win in one order and a tie in the other is a win)."""
        first, n1, c1 = self._ask_about(item.query, item.answer, second.answer)
        swapped_order, n2, c2 = self._ask_about(item.query, second.answer, item.answer)
        swapped = {a: {"A": "B", "B": "A"}.get(w, w) for a, w in swapped_order["winners"].items()}
        combined = {a: combine_orders([w, swapped[a]]) for a, w in first["winners"].items()}
        winners = {a: outcome for a, (outcome, _) in combined.items()}
        rationales = {a: f"{first['rationales'][a]} | {swapped_order['rationales'][a]}" for a in winners}
        return make_verdict(
            **base,
            status="scored",
            winners=winners,
            orders=[first["winners"], swapped],
            rationales=rationales,
            preference=combined["overall"][1] if "overall" in combined else None,
            attempts=n1 + n2,
            cached=c1 and c2,
            seconds=time.perf_counter() - started,
        )

    def judge_item(self, item: AnswerItem | MtBenchItem, second: AnswerItem | None = None) -> Verdict:
        """Judge one item (with ``second``, the other answer, in pairwise mode). Never raises for the judge's faults."""
        if self.template.mode == "mt-bench":
            if not isinstance(item, MtBenchItem):
                raise TypeError("mt-bench judging takes MtBenchItem records (read_mt_bench_answers)")
            return self._judge_mt_bench(item)
        started = time.perf_counter()
        base = {
            "id": item.id,
            "mode": self.template.mode,
            "template": self.template.key,
            "judge": self.model.name,
            "generator": item.generator,
            "dataset": item.dataset,
            "tags": item.tags,
            "query": item.query,
            "answer": item.answer,
            "generator_b": second.generator if second else None,
            "answer_b": second.answer if second else None,
        }
        try:
            if self.template.mode == "pairwise":
                if second is None:
                    raise ValueError("pairwise judging needs the second answer")
                return self._judge_pair(item, second, base, started)
            answer = "" if self.template.mode == "tag" else item.answer  # tags describe the query alone
            parsed, attempts, cached = self._ask_about(item.query, answer, "")
        except _Failed as exc:
            return make_verdict(
                **base, status="failed", error=str(exc), raw=exc.raw, attempts=exc.attempts, seconds=time.perf_counter() - started
            )
        if self.template.mode == "tag":
            return make_verdict(
                **base,
                status="scored",
                labels=parsed["tags"],
                attempts=attempts,
                cached=cached,
                seconds=time.perf_counter() - started,
            )
        return make_verdict(
            **base,
            status="scored",
            scores=parsed["scores"],
            rationales=parsed["rationales"],
            attempts=attempts,
            cached=cached,
            seconds=time.perf_counter() - started,
        )

    def run(
        self,
        items: Iterable[AnswerItem] | Iterable[MtBenchItem],
        out: str | Path,
        *,
        second_answers: dict[str, AnswerItem] | None = None,
        concurrency: int = 1,
        force: bool = False,
        on_start: Callable[[int], None] | None = None,
        on_verdict: Callable[[Verdict], None] | None = None,
    ) -> RunSummary[Verdict]:
        """Judge every item not yet scored in ``out`` (``second_answers``: the second answers by id, pairwise; an
        item without one is left out and counted in the summary as ``no_second_answer``)."""
        mode = self.template.mode
        items = list(items)
        if mode == "pairwise":
            if second_answers is None:
                raise ValueError("pairwise judging needs the second answers")
            left_out = sum(item.id not in second_answers for item in items)
            items = [item for item in items if item.id in second_answers]
        run = ResumableRun(
            VerdictFile(out),
            settings=self.settings,
            settings_of=VerdictBase.settings,
            relevant=lambda v: v.mode == mode,
            finished=lambda v: v.status == "scored",
            key=lambda v: v.key,
            item_key=lambda item: f"{mode}:{item.id}",
        )
        before = self.requests
        summary = run.run(
            items,
            lambda batch: [self.judge_item(item, (second_answers or {}).get(item.id)) for item in batch],
            force=force,
            concurrency=concurrency,
            tally=lambda v: {"cached": int(v.cached)},
            on_start=on_start,
            on_record=on_verdict,
        )
        summary.counts["requests"] = self.requests - before
        if mode == "pairwise":
            summary.counts["no_second_answer"] = left_out  # left out of the run
        return summary
