"""Token distribution shift: one teacher-forced pass per answer and model gives every position.

Modes:

- ``text``: the base model alone scores any answer (its tokenizer, its ranks).
- ``pair``: a base and an aligned model sharing a tokenizer score the same tokens; per position,
  the base rank and probability, the aligned probability, and KL(aligned || base).
- ``context``: the base model scores the answer twice, without and with the URIAL prefix; the
  second pass needs its own backend instance (two passes interleave, chunk by chunk, so two
  distributions of a 262k vocabulary are never held for a whole answer).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from untuned.answers import AnswerItem, ContextKind, plain_context
from untuned.backends import (
    Backend,
    BatchScoring,
    ChatTemplated,
    TokenPieces,
    TokenScores,
    TopKDistributions,
    scores_from_logits,
)
from untuned.conversation import Conversation
from untuned.errors import UntunedError
from untuned.prompt import PromptSet
from untuned.shift.records import KlMethod, ShiftExample, ShiftMode, TokenShift, TopToken, category

log = logging.getLogger(__name__)


class ShiftSettings(BaseModel):
    """What an analysis run is; a resumed run must have the same settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: ShiftMode
    base: str = Field(description="Name of the base model.")
    aligned: str | None = Field(None, description="The aligned side: an aligned model (pair), the base with URIAL (context).")
    context: ContextKind = Field("plain", description="How the query is shown to the base (text, pair modes).")
    prompt_name: str | None = None
    prompt_hash: str | None = None
    top_k: int = Field(5, ge=1, le=50)
    kl_method: KlMethod = Field("full", description="full: KL over the whole vocabulary; top-k: over a server's top-k only.")
    aligned_template: bool = Field(False, description="pair: the aligned model saw the query in its own chat template.")


def urial_context(prompt: PromptSet, query: str) -> str:
    conversation = Conversation(prompt)
    conversation.add_user(query)
    return conversation.render().text


def zip_rows(
    first: Iterator[tuple[np.ndarray, np.ndarray]], second: Iterator[tuple[np.ndarray, np.ndarray]]
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Pair two (index, rows) streams that cover the same indices in chunks of any sizes."""
    a_index, a_rows = np.empty(0, dtype=int), None
    b_index, b_rows = np.empty(0, dtype=int), None
    while True:
        if not len(a_index):
            step = next(first, None)
            if step is None:
                return
            a_index, a_rows = step
        if not len(b_index):
            step = next(second, None)
            if step is None:
                return
            b_index, b_rows = step
        n = min(len(a_index), len(b_index))
        if not np.array_equal(a_index[:n], b_index[:n]):
            raise RuntimeError("the two passes disagree on positions")  # a bug, not bad input
        yield a_index[:n], a_rows[:n], b_rows[:n]
        a_index, a_rows, b_index, b_rows = a_index[n:], a_rows[n:], b_index[n:], b_rows[n:]


class ShiftAnalyzer:
    """Analyse answers with one mode; see the module docstring."""

    def __init__(
        self,
        base: Backend,
        *,
        mode: ShiftMode,
        aligned: Backend | None = None,
        context: ContextKind = "plain",
        prompt: PromptSet | None = None,
        top_k: int = 5,
        aligned_template: bool = False,
    ) -> None:
        if mode in ("pair", "context") and aligned is None:
            raise UntunedError(
                f"{mode} mode needs a second backend ({'the aligned model' if mode == 'pair' else 'the base again'})"
            )
        if mode == "context" and aligned is base:
            raise UntunedError("context mode needs a second instance of the base model: the two passes run side by side")
        if (mode == "context" or context == "urial") and prompt is None:
            raise UntunedError("a URIAL context needs a prompt set")
        self.base, self.aligned, self.mode, self.context, self.prompt, self.top_k = base, aligned, mode, context, prompt, top_k
        self._texts: dict[int, str] = {}
        self._chat: ChatTemplated | None = None  # pair mode: the aligned model sees the answer in its own chat template
        if aligned_template:
            if mode != "pair" or not isinstance(aligned, ChatTemplated):
                raise UntunedError("the aligned model's chat template applies to pair mode with a local aligned model")
            if aligned.template_text() is None:
                raise UntunedError(
                    f"{aligned.name} has no chat template: pass --no-aligned-template to show it the "
                    "query as the base model sees it"
                )
            self._chat = aligned
        self.aligned_template = aligned_template
        full = not any(isinstance(b, TopKDistributions) for b in (base, aligned) if b is not None)
        self.kl_method: KlMethod = "full" if full else "top-k"
        if mode == "pair":
            self._check_same_tokenizer()

    @property
    def settings(self) -> ShiftSettings:
        prompt = self.prompt if (self.mode == "context" or self.context == "urial") else None
        return ShiftSettings(
            mode=self.mode,
            base=self.base.name,
            aligned=self.aligned.name if self.aligned else None,
            context="plain" if self.mode == "context" else self.context,
            prompt_name=prompt.name if prompt else None,
            prompt_hash=prompt.content_hash if prompt else None,
            top_k=self.top_k,
            kl_method=self.kl_method,
            aligned_template=self.aligned_template,
        )

    def _check_same_tokenizer(self) -> None:
        probe = "Tokenizers agree? Ünïcode, code `x = 1`, numbers 12345 and emoji 🙂."
        base_ids, aligned_ids = self.base.tokenize(probe, add_special=True), self.aligned.tokenize(probe, add_special=True)
        sizes = tuple(b.vocab_size if isinstance(b, TokenPieces) else None for b in (self.base, self.aligned))
        if base_ids != aligned_ids or (None not in sizes and sizes[0] != sizes[1]):
            raise UntunedError(
                f"{self.base.name} and {self.aligned.name} do not share a tokenizer, so their distributions cannot be "
                "compared position by position. Use --mode text: it scores the aligned answers with the base tokenizer."
            )

    def _context(self, query: str, *, side: Literal["base", "aligned"]) -> str:
        if self.mode == "context":
            return plain_context(query) if side == "base" else urial_context(self.prompt, query)
        return urial_context(self.prompt, query) if self.context == "urial" else plain_context(query)

    def _text(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            text = self._texts[token] = self.base.detokenize([token])
        return text

    def _top(self, ids: np.ndarray, logprobs: np.ndarray) -> list[TopToken]:
        return [TopToken(id=int(i), text=self._text(int(i)), prob=float(np.exp(lp))) for i, lp in zip(ids, logprobs)]

    def _prepare(self, item: AnswerItem) -> tuple[list[int], list[int] | None, list[int], int]:
        """Context ids of both sides, the answer ids that fit, and the whole answer's length."""
        answer = self.base.tokenize(item.answer)
        base_ctx = self.base.tokenize(self._context(item.query, side="base"), add_special=True)
        aligned_ctx = None
        if self._chat is not None:
            aligned_ctx = self._chat.tokenize_prompt(self._chat.chat_prompt([{"role": "user", "content": item.query.strip()}]))
        elif self.aligned is not None:
            aligned_ctx = self.aligned.tokenize(self._context(item.query, side="aligned"), add_special=True)
        if self.aligned is not None:
            if self.mode == "pair" and self.aligned.tokenize(item.answer) != answer:
                raise UntunedError(f"item {item.id}: the two models tokenize the answer differently; use --mode text")
        room = (self.base.context_length or 1 << 30) - max(len(base_ctx), len(aligned_ctx or []))
        if self.aligned is not None and self.aligned.context_length is not None:
            room = min(room, self.aligned.context_length - len(aligned_ctx or []))
        kept = answer[: max(room, 0)]
        if len(kept) < len(answer):
            log.warning("item %s: answer cut from %d to %d tokens to fit the context window", item.id, len(answer), len(kept))
        return base_ctx, aligned_ctx, kept, len(answer)

    def _example(self, item: AnswerItem, tokens: list[TokenShift], total: int) -> ShiftExample:
        return ShiftExample(
            **item.model_dump(), mode=self.mode, tokens=tokens, truncated=len(tokens) < total, answer_tokens=total
        )

    def analyze(self, item: AnswerItem) -> ShiftExample:
        base_ctx, aligned_ctx, kept, total = self._prepare(item)
        return self._example(item, self._score(base_ctx, aligned_ctx, kept) if kept else [], total)

    def analyze_many(self, items: list[AnswerItem]) -> list[ShiftExample]:
        """Analyse several items; in text mode on a backend with ``score_batch`` (transformers),
        in one padded pass per chunk of positions, which keeps a GPU busy."""
        batch = self.base.score_batch if isinstance(self.base, BatchScoring) else None
        if self.aligned is not None or batch is None or len(items) < 2:
            return [self.analyze(item) for item in items]
        prepared = [self._prepare(item) for item in items]
        scorable = [i for i, (_, _, kept, _) in enumerate(prepared) if kept]
        results = batch(
            [prepared[i][0] + prepared[i][2] for i in scorable], starts=[len(prepared[i][0]) for i in scorable], top_k=self.top_k
        )
        scored = dict(zip(scorable, results))
        examples = []
        for index, (item, (_, _, kept, total)) in enumerate(zip(items, prepared)):
            tokens = self._from_scores(kept, scored[index]) if index in scored else []
            examples.append(self._example(item, tokens, total))
        return examples

    def _score(self, base_ctx: list[int], aligned_ctx: list[int] | None, answer: list[int]) -> list[TokenShift]:
        targets = np.asarray(answer)
        if aligned_ctx is None:
            return self._from_scores(answer, self.base.score(base_ctx + answer, start=len(base_ctx), top_k=self.top_k))
        if self.kl_method == "top-k":
            return self._from_top_k(base_ctx, aligned_ctx, answer)
        base_start, aligned_start = len(base_ctx), len(aligned_ctx)
        first = ((pos - base_start, rows) for pos, rows in self.base.distributions(base_ctx + answer, start=base_start))
        second = (
            (pos - aligned_start, rows) for pos, rows in self.aligned.distributions(aligned_ctx + answer, start=aligned_start)
        )
        records: list[TokenShift] = []
        for index, base_rows, aligned_rows in zip_rows(first, second):
            if base_rows.shape[1] != aligned_rows.shape[1]:
                raise UntunedError(
                    f"vocabularies differ ({base_rows.shape[1]} vs {aligned_rows.shape[1]} tokens): "
                    "KL is undefined; use --mode text"
                )
            wanted = targets[index]
            base_lp, base_rank, base_top, base_top_lp = scores_from_logits(base_rows, wanted, self.top_k, normalized=True)
            aligned_lp, aligned_rank, aligned_top, aligned_top_lp = scores_from_logits(
                aligned_rows, wanted, self.top_k, normalized=True
            )
            kl = (np.exp(aligned_rows) * (aligned_rows - base_rows)).sum(axis=1, dtype=np.float64)
            for row, i in enumerate(index):
                record = self._record(
                    int(i), int(wanted[row]), int(base_rank[row]), base_lp[row], (base_top[row], base_top_lp[row])
                )
                record.aligned_rank, record.aligned_prob = int(aligned_rank[row]), float(np.exp(aligned_lp[row]))
                record.kl = max(float(kl[row]), 0.0)
                record.aligned_top = self._top(aligned_top[row], aligned_top_lp[row])
                records.append(record)
        return records

    def _from_top_k(self, base_ctx: list[int], aligned_ctx: list[int], answer: list[int]) -> list[TokenShift]:
        """Both sides from their top-k alone (a server gives no more): ranks and categories exact (k >= 3),
        KL(aligned || base) summed over the aligned side's top-k, a base token outside its own top-k taken
        at the base's k-th log-probability (so the KL is a lower estimate)."""
        base = self.base.score(base_ctx + answer, start=len(base_ctx), top_k=self.top_k)
        aligned = self.aligned.score(aligned_ctx + answer, start=len(aligned_ctx), top_k=self.top_k)
        records = self._from_scores(answer, base)
        for i, record in enumerate(records):
            base_lp = dict(zip(base.top_ids[i].tolist(), base.top_logprobs[i].tolist()))
            floor = float(np.min(base.top_logprobs[i][np.isfinite(base.top_logprobs[i])], initial=0.0))
            pairs = [
                (lp, base_lp.get(t, floor))
                for t, lp in zip(aligned.top_ids[i].tolist(), aligned.top_logprobs[i].tolist())
                if t >= 0
            ]
            record.aligned_rank, record.aligned_prob = int(aligned.ranks[i]), float(np.exp(aligned.logprobs[i]))
            record.kl = max(sum(np.exp(a) * (a - b) for a, b in pairs), 0.0)
            record.aligned_top = self._top(aligned.top_ids[i], aligned.top_logprobs[i])
        return records

    def _from_scores(self, answer: list[int], scores: TokenScores) -> list[TokenShift]:
        """Records of one answer from the base model's scores of it (text mode)."""
        return [
            self._record(i, answer[i], int(scores.ranks[i]), scores.logprobs[i], (scores.top_ids[i], scores.top_logprobs[i]))
            for i in range(len(answer))
        ]

    def _record(self, index: int, token: int, rank: int, logprob: float, top: tuple[np.ndarray, np.ndarray]) -> TokenShift:
        return TokenShift(
            index=index,
            id=token,
            text=self._text(token),
            rank=rank,
            prob=float(np.exp(logprob)),
            category=category(rank),
            top=self._top(*top),
        )
