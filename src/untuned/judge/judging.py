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

from untuned.errors import InvalidInput, JudgeUnavailable, ReplyError
from untuned.judge.cache import JudgeCache, cache_key
from untuned.judge.mode import JudgeFailed, JudgeMode
from untuned.judge.models import JudgeModel
from untuned.judge.parse import parse_reply
from untuned.judge.verdicts import JudgeSettings, Verdict, VerdictBase, VerdictFile, make_verdict
from untuned.runner import ResumableRun, RunSummary

if TYPE_CHECKING:
    from untuned.answers import AnswerItem
    from untuned.benchmarks.mt_bench import MtBenchItem

log = logging.getLogger(__name__)


class Judge:
    """A judge model, a judge mode and a reply cache: :meth:`judge_item` one item, :meth:`run` many."""

    def __init__(self, model: JudgeModel, mode: JudgeMode, cache: JudgeCache | None = None, *, parse_retries: int = 2) -> None:
        self.model, self.mode, self.cache, self.parse_retries = model, mode, cache, parse_retries
        self._count_lock = threading.Lock()
        self.requests = 0

    @property
    def settings(self) -> JudgeSettings:
        return JudgeSettings(judge=self.model.name, template=self.mode.key)

    def close(self) -> None:
        """Close the judge model and the cache."""
        self.model.close()
        if self.cache is not None:
            self.cache.close()

    def ask(
        self, messages: list[dict[str, str]], schema: dict, parse: Callable[[str], Any], *parts: str
    ) -> tuple[Any, int, bool]:
        """Parsed reply, requests made, whether it came from the cache (keyed by judge, template and ``parts``)."""
        key = cache_key(self.model.name, self.mode.key, *parts)
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
                raise JudgeFailed(str(exc), raw, attempt) from exc
            try:
                parsed = parse(raw)
            except ReplyError as exc:
                problem = str(exc)
                log.info("unparseable reply (attempt %d): %s", attempt, problem)
                continue
            if self.cache is not None:
                self.cache.put(key, judge=self.model.name, template=self.mode.key, reply=raw)
            return parsed, attempt, False
        raise JudgeFailed(f"no parseable reply after {self.parse_retries + 1} attempts: {problem}", raw, self.parse_retries + 1)

    def ask_about(self, query: str, answer: str, other: str) -> tuple[dict[str, Any], int, bool]:
        return self.ask(
            self.mode.messages(query, answer, other),
            self.mode.schema(),
            lambda raw: parse_reply(self.mode, raw),
            query,
            answer,
            other,
        )

    def verdict_base(self, item: Any, second: Any = None) -> dict[str, Any]:
        """The fields of a verdict that come from the item (and the second answer) and this judge."""
        return {
            "id": item.id,
            "mode": self.mode.name,
            "template": self.mode.key,
            "judge": self.model.name,
            "generator": item.generator,
            "dataset": getattr(item, "dataset", None),
            "tags": getattr(item, "tags", {}),
            "query": getattr(item, "query", ""),
            "answer": getattr(item, "answer", ""),
            "generator_b": second.generator if second is not None else None,
            "answer_b": getattr(second, "answer", None) if second is not None else None,
        }

    def verdict(self, base: dict[str, Any], started: float, **fields: Any) -> Verdict:
        """The mode's verdict record, with how long judging the item took."""
        return make_verdict(**base, **fields, seconds=time.perf_counter() - started)

    def failed(self, base: dict[str, Any], exc: JudgeFailed, started: float, **fields: Any) -> Verdict:
        """A failed verdict: the reason and the judge's last reply kept, nothing invented."""
        fields.setdefault("attempts", exc.attempts)
        return self.verdict(base, started, status="failed", error=str(exc), raw=exc.raw, **fields)

    def judge_item(self, item: AnswerItem | MtBenchItem, second: AnswerItem | MtBenchItem | None = None) -> Verdict:
        """Judge one item (with ``second``, the other answer, in a pairwise mode) as the mode judges it.
        Never raises for the judge's faults."""
        return self.mode.judge(self, item, second)

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
        """Judge every item not yet scored in ``out`` (``second_answers``: the second answers by id, for a mode that
        compares two; an item without one is left out and counted in the summary as ``no_second_answer``)."""
        mode = self.mode.name
        items = list(items)
        left_out = 0
        if self.mode.needs_second:
            if second_answers is None:
                raise InvalidInput(f"{mode} judging needs the second answers")
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
        summary.counts["no_second_answer"] = left_out  # left out of the run
        return summary
