"""Token distribution shift: one teacher-forced pass per answer and model gives every position.

Modes:

- ``text``: the base model alone scores any answer (its tokenizer, its ranks of the answer's tokens).
- ``pair``: a base and an aligned model sharing a tokenizer read the same answer; per position, the
  aligned model's own top-1 token is ranked under the base, with its probability under both, KL(aligned‖base)
  and the paper's KL@10. :meth:`ShiftAnalyzer.aligntds` follows the paper's analysis (docs/shift.md says
  where it still differs): the base given AlignTDS's context, the aligned model its chat template, tokens
  matched by decoded text as AlignTDS matches them, the end position scored.
- ``context``: the base model reads the answer twice, without and with the URIAL prefix (the "aligned"
  side). Given a second backend instance, the two passes interleave chunk by chunk (two distributions of a
  262k vocabulary are never held for a whole answer) and give KL; given the same instance twice (a server's
  one model), they run in turn, keeping only the aligned side's scores, with no KL.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from untuned.answers import AnswerItem
from untuned.backends import (
    Backend,
    BatchScoring,
    ChatTemplated,
    OwnTokenizer,
    TargetScoring,
    TokenPieces,
    TokenScores,
    TopKDistributions,
    scores_from_logits,
)
from untuned.errors import InvalidInput, UntunedError
from untuned.prompt import PromptSet
from untuned.shift.contexts import ContextKind, aligntds_context, plain_context, urial_context, without_end_marker
from untuned.shift.families import FAMILIES, AlignedContext, detect_family, template_system_prompt
from untuned.shift.records import KlMethod, Match, Ranked, ShiftExample, ShiftMode, ShiftSettings, TokenShift, TopToken, category
from untuned.shift.rows import AlignedSide, BaseSide, aligntds_kl_top10, own_tokens, text_ranks, zip_rows

log = logging.getLogger(__name__)
Contexts = tuple[list[int], list[int] | None]  # the ids the base side and the aligned side read before the answer


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
        ranked: Ranked | None = None,
        end: bool | Literal["marked"] = False,
        answers_sampling: dict | None = None,
        texts: dict[int, str] | None = None,
        match: Match = "ids",
        aligned_context: AlignedContext | None = None,
    ) -> None:
        """``texts``: a cache of the base model's token texts to share with other analyses of the same model.
        ``match="text"``: the aligned top-1 agrees with a base token of the same decoded text (AlignTDS's rule),
        ``"ids"``: only with the same id. ``end="marked"``: the end position is scored where the answer's text ends
        with an end marker ("</s>"), as AlignTDS reads it. ``aligned_context`` (pair mode): the aligned side reads
        its family's string and both sides' contexts are encoded by the models' own tokenizers (AlignTDS's)."""
        if mode in ("pair", "context") and aligned is None:
            second = "the aligned model" if mode == "pair" else "the base again, or the same one"
            raise UntunedError(f"{mode} mode needs a second backend: {second}")
        if (mode == "context" or context == "urial") and prompt is None:
            raise UntunedError("a URIAL context needs a prompt set")
        self.base, self.aligned, self.mode, self.context, self.prompt, self.top_k = base, aligned, mode, context, prompt, top_k
        full = not any(isinstance(b, TopKDistributions) for b in (base, aligned) if b is not None)
        # with a server's top-k only, the answer's token is ranked (the aligned top-1's base rank may lie past k)
        self.ranked: Ranked = ranked or ("aligned-top1" if aligned is not None and full else "answer")
        if self.ranked == "aligned-top1" and (aligned is None or not full):
            raise UntunedError(
                "ranking the aligned side's top-1 token needs an aligned side (pair or context mode) whose "
                "distributions are whole (not a server's top-k): use --rank answer"
            )
        if end and aligned is None:
            raise UntunedError("the end position is scored with an aligned side's top-1 (pair or context mode)")
        self.end, self.answers_sampling = end, answers_sampling
        if match == "text" and not (mode == "pair" and self.ranked == "aligned-top1"):
            raise UntunedError(
                "matching by text (AlignTDS's rule) applies to pair mode ranking the aligned top-1 (--rank aligned-top1)"
            )
        self.match: Match = match
        self.aligned_context = aligned_context
        if aligned_context is not None and (
            mode != "pair" or aligned_template or not all(isinstance(b, OwnTokenizer) for b in (base, aligned))
        ):
            raise UntunedError("a family's aligned context applies to pair mode with two local models, not with a chat template")
        self._texts: dict[int, str] = texts if texts is not None else {}
        self._chat = self._chat_side(aligned_template)  # pair mode: the aligned model reads its own chat template
        self.aligned_template = aligned_template
        self.kl_method: KlMethod = "full" if full else "top-k"
        if mode == "pair":
            self._check_same_tokenizer()

    def _chat_side(self, aligned_template: bool) -> ChatTemplated | None:
        if not aligned_template:
            return None
        if self.mode != "pair" or not isinstance(self.aligned, ChatTemplated):
            raise UntunedError("the aligned model's chat template applies to pair mode with a local aligned model")
        if self.aligned.template_text() is None:
            raise UntunedError(
                f"{self.aligned.name} has no chat template: pass --no-aligned-template to show it the "
                "query as the base model sees it"
            )
        return self.aligned

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
            ranked=self.ranked,
            end=self.end,
            match=self.match,
            aligned_family=self.aligned_context.family.name if self.aligned_context else None,
            aligned_system=self.aligned_context.system_prompt if self.aligned_context else None,
            answers_sampling=self.answers_sampling,
        )

    @classmethod
    def aligntds(
        cls,
        base: Backend,
        aligned: Backend,
        *,
        top_k: int = 5,
        answers_sampling: dict | None = None,
        family: str | None = None,
        system_prompt: str | None = None,
    ) -> ShiftAnalyzer:
        """The paper's analysis as AlignTDS runs it (docs/shift.md): the base given AlignTDS's context, the aligned
        model its family's string (``family``, else told from its chat template; ``system_prompt``, else the one its
        template carries), both encoded by the models' own tokenizers; the aligned top-1 ranked and matched by
        decoded text; the end scored where the answer ends with an end marker."""
        template = aligned.template_text() if isinstance(aligned, ChatTemplated) else None
        chosen = FAMILIES[family] if family else detect_family(template, aligned.name)
        system = system_prompt if system_prompt is not None else template_system_prompt(template)
        return cls(
            base,
            mode="pair",
            aligned=aligned,
            context="aligntds",
            top_k=top_k,
            ranked="aligned-top1",
            end="marked",
            answers_sampling=answers_sampling,
            match="text",
            aligned_context=AlignedContext(chosen, system),
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
        if self.context == "aligntds":
            return aligntds_context(query)
        return urial_context(self.prompt, query) if self.context == "urial" else plain_context(query)

    def token_text(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            text = self._texts[token] = self.base.detokenize([token])
        return text

    def match_text(self, token: int) -> str:
        """A token's text as AlignTDS compares tokens: its tokenizer's ``decode`` of the id alone, special tokens
        shown ("</s>"), on a transformers model; the backend's own text of it elsewhere."""
        key = -1 - token  # kept beside the display texts, apart from them
        text = self._texts.get(key)
        if text is None:
            tokenizer = getattr(self.base, "tokenizer", None)
            text = self._texts[key] = tokenizer.decode([token]) if tokenizer is not None else self.token_text(token)
        return text

    def _top(self, ids: np.ndarray, logprobs: np.ndarray) -> list[TopToken]:
        return [TopToken(id=int(i), text=self.token_text(int(i)), prob=float(np.exp(lp))) for i, lp in zip(ids, logprobs)]

    def _prepare(
        self, item: AnswerItem, contexts: Contexts | None = None
    ) -> tuple[list[int], list[int] | None, list[int], int, bool]:
        """Context ids of both sides (``contexts`` where given), the answer ids that fit, the whole answer's length,
        and whether its end position is scored. A trailing end marker written as text ("</s>") is the end position
        (scored with ``end``, or where it is there with ``end="marked"``), never ordinary tokens."""
        text, marked = without_end_marker(item.answer)
        end = self.end is True or (self.end == "marked" and marked)
        answer = self.base.tokenize(text)
        base_ctx, aligned_ctx = contexts if contexts is not None else self._contexts(item.query)
        if self.aligned is not None:
            if self.mode == "pair" and self.aligned.tokenize(text) != answer:
                raise UntunedError(f"item {item.id}: the two models tokenize the answer differently; use --mode text")
        room = (self.base.context_length or 1 << 30) - max(len(base_ctx), len(aligned_ctx or [])) - int(end)
        if self.aligned is not None and self.aligned.context_length is not None:
            room = min(room, self.aligned.context_length - len(aligned_ctx or []))
        kept = answer[: max(room, 0)]
        if len(kept) < len(answer):
            log.warning("item %s: answer cut from %d to %d tokens to fit the context window", item.id, len(answer), len(kept))
        return base_ctx, aligned_ctx, kept, len(answer), end

    def _contexts(self, query: str) -> Contexts:
        """The ids each side reads before an answer to ``query``, each tokenized once."""
        if self.aligned_context is not None:  # AlignTDS: the models' own tokenizers, specials read
            return self.base.encode_text(self._context(query, side="base")), self.aligned.encode_text(
                self.aligned_context.text(query)
            )
        base_ctx = self.base.tokenize(self._context(query, side="base"), add_special=True)
        if self._chat is not None:
            return base_ctx, self._chat.tokenize_prompt(self._chat.chat_prompt([{"role": "user", "content": query.strip()}]))
        if self.aligned is not None:
            return base_ctx, self.aligned.tokenize(self._context(query, side="aligned"), add_special=True)
        return base_ctx, None

    def _example(self, item: AnswerItem, tokens: list[TokenShift], total: int) -> ShiftExample:
        return ShiftExample(
            **item.model_dump(), mode=self.mode, tokens=tokens, truncated=len(tokens) < total, answer_tokens=total
        )

    def analyze(self, item: AnswerItem, *, contexts: Contexts | None = None) -> ShiftExample:
        """One answer; ``contexts``: the ids each side reads before it (base, aligned), in place of the ones made
        from the query (a whole conversation, as the server's page gives it)."""
        if contexts is not None and (contexts[1] is None) != (self.aligned is None):
            raise InvalidInput("contexts must give an aligned side's ids exactly when there is an aligned side")
        base_ctx, aligned_ctx, kept, total, end = self._prepare(item, contexts)
        return self._example(item, self._score(base_ctx, aligned_ctx, kept, end) if kept or end else [], total)

    def analyze_many(self, items: list[AnswerItem]) -> list[ShiftExample]:
        """Analyse several items; in text mode on a backend with ``score_batch`` (transformers),
        in one padded pass per chunk of positions, which keeps a GPU busy."""
        batch = self.base.score_batch if isinstance(self.base, BatchScoring) else None
        if self.aligned is not None or batch is None or len(items) < 2:
            return [self.analyze(item) for item in items]
        prepared = [self._prepare(item) for item in items]
        scorable = [i for i, (_, _, kept, _, _) in enumerate(prepared) if kept]
        results = batch(
            [prepared[i][0] + prepared[i][2] for i in scorable], starts=[len(prepared[i][0]) for i in scorable], top_k=self.top_k
        )
        scored = dict(zip(scorable, results))
        examples = []
        for index, (item, (_, _, kept, total, _)) in enumerate(zip(items, prepared)):
            tokens = self._from_scores(kept, scored[index]) if index in scored else []
            examples.append(self._example(item, tokens, total))
        return examples

    def _score(self, base_ctx: list[int], aligned_ctx: list[int] | None, answer: list[int], end: bool) -> list[TokenShift]:
        if aligned_ctx is None:
            return self._from_scores(answer, self.base.score(base_ctx + answer, start=len(base_ctx), top_k=self.top_k))
        if self.kl_method == "top-k":
            return self._from_top_k(base_ctx, aligned_ctx, answer)
        # with the end position, one more row: the distribution after the whole answer (a filler token
        # is appended so that the pass gives the row that would predict it; the filler is never scored)
        tail = answer + ([answer[-1] if answer else 0] if end else [])
        if self.aligned is self.base:
            return self._in_turn(base_ctx, aligned_ctx, answer, tail)
        base_start, aligned_start = len(base_ctx), len(aligned_ctx)
        first = ((pos - base_start, rows) for pos, rows in self.base.distributions(base_ctx + tail, start=base_start))
        second = (
            (pos - aligned_start, rows) for pos, rows in self.aligned.distributions(aligned_ctx + tail, start=aligned_start)
        )
        records: list[TokenShift] = []
        for index, base_rows, aligned_rows in zip_rows(first, second):
            if base_rows.shape[1] != aligned_rows.shape[1]:
                raise UntunedError(
                    f"vocabularies differ ({base_rows.shape[1]} vs {aligned_rows.shape[1]} tokens): "
                    "KL is undefined; use --mode text"
                )
            kl = (np.exp(aligned_rows) * (aligned_rows - base_rows)).sum(axis=1, dtype=np.float64)
            array = np.asarray(answer)
            side = self._aligned_side(index, array, aligned_rows)
            base = self._base_side(index, array, base_rows, side)
            text = self.match_text if self.match == "text" else None
            if text is not None:  # AlignTDS's rule: the same decoded text agrees, whatever the id
                ranks = text_ranks(base_rows, side.wanted, base.rank, text)
                base = base._replace(rank=ranks, rank_worst=np.where(ranks != base.rank, ranks, base.rank_worst))
            records += self._rows(index, array, base, side, kl, aligntds_kl_top10(base_rows, aligned_rows, text))
        return records

    def _aligned_side(self, index: np.ndarray, answer: np.ndarray, aligned_rows: np.ndarray) -> AlignedSide:
        """What the records need of a chunk of the aligned side's rows (the ranked token and its scores there)."""
        own = own_tokens(index, answer)
        wanted = aligned_rows.argmax(axis=1) if self.ranked == "aligned-top1" else own
        logprob, rank, top, top_lp, _ = scores_from_logits(aligned_rows, wanted, self.top_k, normalized=True)
        own_rank = scores_from_logits(aligned_rows, own, 1, normalized=True)[1]
        return AlignedSide(wanted, logprob, rank, top, top_lp, own_rank)

    def _base_side(self, index: np.ndarray, answer: np.ndarray, base_rows: np.ndarray, side: AlignedSide) -> BaseSide:
        logprob, rank, top, top_lp, worst = scores_from_logits(base_rows, side.wanted, self.top_k, normalized=True)
        own_rank = scores_from_logits(base_rows, own_tokens(index, answer), 1, normalized=True)[1]
        return BaseSide(logprob, rank, top, top_lp, worst, own_rank)

    def _rows(
        self,
        index: np.ndarray,
        answer: np.ndarray,
        base: BaseSide,
        side: AlignedSide,
        kl: np.ndarray | None = None,
        kl10: np.ndarray | None = None,
    ) -> list[TokenShift]:
        """Records of a chunk of positions from both sides' scores, with the KLs where both sides' rows were
        at hand together (docs/shift.md defines each)."""
        end = index >= len(answer)
        own = own_tokens(index, answer)
        records = []
        for row, i in enumerate(index):
            token = int(side.wanted[row])
            record = self._record(int(i), token, int(base.rank[row]), base.logprob[row], (base.top[row], base.top_logprobs[row]))
            record.rank_worst = int(base.rank_worst[row]) if base.rank_worst[row] != base.rank[row] else None
            record.end = bool(end[row])
            if not record.end and int(own[row]) != token:
                record.answer_id, record.answer_rank = int(own[row]), int(base.own_rank[row])
                record.answer_text = self.token_text(int(own[row]))
                record.answer_aligned_rank = int(side.own_rank[row])
            record.aligned_rank, record.aligned_prob = int(side.rank[row]), float(np.exp(side.logprob[row]))
            if kl is not None and kl10 is not None:
                record.kl, record.kl_top10 = max(float(kl[row]), 0.0), float(kl10[row])
            record.aligned_top = self._top(side.top[row], side.top_logprobs[row])
            records.append(record)
        return records

    def _in_turn(self, base_ctx: list[int], aligned_ctx: list[int], answer: list[int], tail: list[int]) -> list[TokenShift]:
        """Context mode on one instance (a server's single model): the aligned side's pass first, keeping only
        the scores the records need, then the base side's; no KL (the two sides' rows are never at hand
        together). On a backend that ranks chosen tokens (TargetScoring) the ranks are made where the model
        runs and only top-k cross to here; otherwise from whole rows, chunk by chunk."""
        array = np.asarray(answer)
        if isinstance(self.base, TargetScoring):
            side, base = self._scored_sides(base_ctx, aligned_ctx, array, tail)
            return self._rows(np.arange(len(tail)), array, base, side)
        start = len(aligned_ctx)
        passes = self.aligned.distributions(aligned_ctx + tail, start=start)
        sides = [self._aligned_side(pos - start, array, rows) for pos, rows in passes]
        side = AlignedSide(*(np.concatenate(column) for column in zip(*sides)))
        records: list[TokenShift] = []
        start = len(base_ctx)
        for pos, rows in self.base.distributions(base_ctx + tail, start=start):
            index = pos - start
            chunk = side.take(index)
            records += self._rows(index, array, self._base_side(index, array, rows, chunk), chunk)
        return records

    def _scored_sides(self, base_ctx: list[int], aligned_ctx: list[int], answer: np.ndarray, tail: list[int]):
        """Both sides' scores from ``score`` and ``score_targets`` (which ranks the answer's own tokens too)."""
        own = own_tokens(np.arange(len(tail)), answer)
        aligned = self.aligned.score(aligned_ctx + tail, start=len(aligned_ctx), top_k=self.top_k)
        if self.ranked == "aligned-top1":
            wanted, logprob, rank = aligned.top_ids[:, 0], aligned.top_logprobs[:, 0], np.ones(len(tail), dtype=int)
        else:
            wanted, logprob, rank = own, aligned.logprobs, aligned.ranks
        side = AlignedSide(wanted, logprob, rank, aligned.top_ids, aligned.top_logprobs, aligned.ranks)
        base = self.base.score_targets(base_ctx + tail, wanted.tolist(), start=len(base_ctx), top_k=self.top_k)
        worst = base.ranks_worst if base.ranks_worst is not None else base.ranks
        return side, BaseSide(base.logprobs, base.ranks, base.top_ids, base.top_logprobs, worst, base.sequence_ranks)

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
        records = []
        for i in range(len(answer)):
            record = self._record(
                i, answer[i], int(scores.ranks[i]), scores.logprobs[i], (scores.top_ids[i], scores.top_logprobs[i])
            )
            worst = None if scores.ranks_worst is None else int(scores.ranks_worst[i])
            record.rank_worst = worst if worst != record.rank else None
            records.append(record)
        return records

    def _record(self, index: int, token: int, rank: int, logprob: float, top: tuple[np.ndarray, np.ndarray]) -> TokenShift:
        return TokenShift(
            index=index,
            id=token,
            text=self.token_text(token),
            rank=rank,
            prob=float(np.exp(logprob)),
            category=category(rank),
            top=self._top(*top),
        )
