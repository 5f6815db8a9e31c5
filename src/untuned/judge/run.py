"""Judge many answers: concurrent, cached, resumable, and never losing or inventing a verdict.

Every item ends as one :class:`Verdict` line in the output file, ``scored`` or ``failed`` (with
the judge's raw reply and the reason). A rerun skips items already scored in the file and asks
again for failed ones; replies already in the cache cost no request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from untuned.answers import AnswerItem
from untuned.jsonl import JsonlFile
from untuned.judge.cache import JudgeCache, cache_key
from untuned.judge.judges import Judge, JudgeUnavailable
from untuned.judge.parse import ReplyError, parse_reply
from untuned.judge.templates import Mode, Template

log = logging.getLogger(__name__)


class Verdict(BaseModel):
    """The judgment of one item (one answer, or two in pairwise mode)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    mode: Mode
    template: str = Field(description="Template name@version.")
    judge: str
    status: Literal["scored", "failed"]
    generator: str | None = None
    generator_b: str | None = Field(None, description="pairwise: the second answer's model.")
    dataset: str | None = None
    tags: dict[str, list[str]] = Field(default_factory=dict)
    query: str
    answer: str
    answer_b: str | None = None
    scores: dict[str, int | None] = Field(default_factory=dict, description="1-5; None = the judge said N/A.")
    rationales: dict[str, str] = Field(default_factory=dict)
    winners: dict[str, str] = Field(default_factory=dict, description="pairwise: A (first file), B or tie, both orders combined.")
    orders: list[dict[str, str]] = Field(default_factory=list, description="pairwise: winners as asked in each order.")
    labels: dict[str, list[str]] = Field(default_factory=dict, description="tag mode: task_types, topics, difficulty.")
    attempts: int = 0
    cached: bool = False
    error: str | None = None
    raw: str | None = Field(None, description="The judge's last reply, kept when it could not be parsed.")
    seconds: float = 0.0


class VerdictFile(JsonlFile[Verdict]):
    def __init__(self, path: str | Path) -> None:
        super().__init__(path, Verdict, label="verdict")

    def latest(self) -> dict[tuple[str, str], Verdict]:
        """The last verdict per (mode, id): a rerun appends new verdicts for items that had failed,
        and one file may hold several modes (multi and safety verdicts of one model, say)."""
        return {(verdict.mode, verdict.id): verdict for verdict in self.read(repair=True)}


@dataclass
class JudgeSummary:
    total: int
    skipped: int
    scored: int = 0
    failed: int = 0
    cached: int = 0
    requests: int = 0
    seconds: float = 0.0


class _Failed(Exception):
    def __init__(self, message: str, raw: str | None, attempts: int) -> None:
        super().__init__(message)
        self.raw, self.attempts = raw, attempts


class Judging:
    """A judge, a template and a cache: :meth:`judge` one item, :meth:`run` many."""

    def __init__(self, judge: Judge, template: Template, cache: JudgeCache | None = None, *, parse_retries: int = 2) -> None:
        self.judge, self.template, self.cache, self.parse_retries = judge, template, cache, parse_retries
        self._count_lock = threading.Lock()
        self.requests = 0

    def _ask(self, query: str, answer: str, other: str) -> tuple[dict[str, Any], int, bool]:
        """Parsed reply, requests made, whether it came from the cache."""
        key = cache_key(self.judge.name, self.template.key, query, answer, other)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return parse_reply(self.template, hit), 0, True
        messages = self.template.messages(query, answer, other)
        raw: str | None = None
        problem = ""
        for attempt in range(1, self.parse_retries + 2):
            with self._count_lock:
                self.requests += 1
            try:
                raw = self.judge.reply(messages, self.template.schema())
            except JudgeUnavailable as exc:
                raise _Failed(str(exc), raw, attempt) from exc
            try:
                parsed = parse_reply(self.template, raw)
            except ReplyError as exc:
                problem = str(exc)
                log.info("unparseable reply (attempt %d): %s", attempt, problem)
                continue
            if self.cache is not None:
                self.cache.put(key, judge=self.judge.name, template=self.template.key, reply=raw)
            return parsed, attempt, False
        raise _Failed(f"no parseable reply after {self.parse_retries + 1} attempts: {problem}", raw, self.parse_retries + 1)

    def judge_item(self, item: AnswerItem, other: AnswerItem | None = None) -> Verdict:
        """Judge one item (with ``other``, the second answer, in pairwise mode). Never raises for the judge's faults."""
        started = time.perf_counter()
        base = {"id": item.id, "mode": self.template.mode, "template": self.template.key, "judge": self.judge.name,
                "generator": item.generator, "dataset": item.dataset, "tags": item.tags, "query": item.query,
                "answer": item.answer, "generator_b": other.generator if other else None,
                "answer_b": other.answer if other else None}  # fmt: skip
        try:
            if self.template.mode == "pairwise":
                assert other is not None
                first, n1, c1 = self._ask(item.query, item.answer, other.answer)
                second, n2, c2 = self._ask(item.query, other.answer, item.answer)
                swapped = {a: {"A": "B", "B": "A"}.get(w, w) for a, w in second["winners"].items()}
                winners = {a: w if swapped[a] == w else "tie" for a, w in first["winners"].items()}
                rationales = {a: f"{first['rationales'][a]} | {second['rationales'][a]}" for a in winners}
                return Verdict(**base, status="scored", winners=winners, orders=[first["winners"], swapped],
                               rationales=rationales, attempts=n1 + n2, cached=c1 and c2,
                               seconds=time.perf_counter() - started)  # fmt: skip
            answer = "" if self.template.mode == "tag" else item.answer  # tags describe the query alone
            parsed, attempts, cached = self._ask(item.query, answer, "")
        except _Failed as exc:
            return Verdict(**base, status="failed", error=str(exc), raw=exc.raw, attempts=exc.attempts,
                           seconds=time.perf_counter() - started)  # fmt: skip
        if self.template.mode == "tag":
            return Verdict(**base, status="scored", labels=parsed["tags"], attempts=attempts, cached=cached,
                           seconds=time.perf_counter() - started)  # fmt: skip
        return Verdict(**base, status="scored", scores=parsed["scores"], rationales=parsed["rationales"],
                       attempts=attempts, cached=cached, seconds=time.perf_counter() - started)  # fmt: skip

    def run(
        self,
        items: Iterable[AnswerItem],
        out: str | Path,
        *,
        others: dict[str, AnswerItem] | None = None,
        concurrency: int = 1,
        on_start: Callable[[int], None] | None = None,
        on_verdict: Callable[[Verdict], None] | None = None,
    ) -> JudgeSummary:
        """Judge every item not yet scored in ``out``; append each verdict as soon as it is made."""
        store = VerdictFile(out)
        mode = self.template.mode
        done = {i for (m, i), v in store.latest().items() if m == mode and v.status == "scored"}
        items = list(items)
        if self.template.mode == "pairwise":
            if others is None:
                raise ValueError("pairwise judging needs the second answers (others)")
            missing = [item.id for item in items if item.id not in others]
            if missing:
                log.warning("%d items have no second answer and are left out (first: %s)", len(missing), missing[0])
            items = [item for item in items if item.id in others]
        todo = [item for item in items if item.id not in done]
        summary = JudgeSummary(total=len(items), skipped=len(items) - len(todo))
        if on_start:
            on_start(len(todo))
        started, before = time.perf_counter(), self.requests
        write = threading.Lock()
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="untuned-judge") as pool:
            futures = [pool.submit(self.judge_item, item, (others or {}).get(item.id)) for item in todo]
            for future in as_completed(futures):
                verdict = future.result()
                with write:
                    store.append(verdict)
                summary.scored += verdict.status == "scored"
                summary.failed += verdict.status == "failed"
                summary.cached += verdict.cached
                if on_verdict:
                    on_verdict(verdict)
        summary.requests = self.requests - before
        summary.seconds = time.perf_counter() - started
        return summary
