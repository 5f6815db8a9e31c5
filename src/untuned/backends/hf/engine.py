"""Batched generation for the transformers backend: up to ``slots`` answers per forward pass.

Requests that share a URIAL prefix are answered together, in *waves*: a wave starts with the
requests waiting at that moment (up to ``slots``, those with the first one's prefix), and runs
until all of them have finished; requests that arrive meanwhile wait for the next wave. The
prefix's key-value cache is computed once and laid into every row of the batch:

    row i = [padding | prefix | body i]     (right-aligned, so every row's tokens are contiguous)

A row whose body is shorter than the longest starts further right; the part of the prefix that then
falls among the body columns is fed again with the bodies. Padding is masked out, positions count
from the prefix's first token, and finished rows leave the batch. Sliding-window models (gemma-3)
stay correct because every row's tokens are contiguous. A wave of one request is the one-at-a-time
computation; greedy answers of a wave equal one-at-a-time answers (float32 rounding of the larger
matrix products aside, tested on the tiny float32 model and gemma-3).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from untuned.backends.batching import BatchingEngine, Request
from untuned.backends.hf.model import LoadedModel
from untuned.backends.protocol import Sampling, StreamChunk, TokenLogprob, is_greedy
from untuned.backends.scoring import token_logprob
from untuned.constraint import Constrained, Constraints
from untuned.errors import ConstraintError, ModelFailure

log = logging.getLogger(__name__)


class _Row:
    """One request of a wave: what it has produced and how it samples."""

    def __init__(self, request: Request, lm: LoadedModel) -> None:
        torch = lm.torch
        self.request = request
        self.sampling = request.sampling
        self.chain = lm.processors(request.sampling)
        self.generator = torch.Generator(device=lm.device)
        seed = request.sampling.seed
        self.generator.manual_seed(seed if seed is not None else int(torch.seed() % 2**31))
        self.history = torch.tensor([[*request.prefix, *request.body]], device=lm.device)
        self.produced: list[int] = []
        self.shown = ""
        self.logprob: TokenLogprob | None = None


class TransformersEngine(BatchingEngine):
    """Waves of up to ``slots`` requests over one transformers model; see the module docstring."""

    thread_name = "untuned-transformers-engine"

    def __init__(self, lm: LoadedModel, *, slots: int = 1) -> None:
        super().__init__(slots)
        self.lm = lm
        self.slots = slots
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: Any = None
        self._positions: Any = None
        self.constraints = Constraints(self._llguidance_tokenizer, lm.n_logits)  # structured output
        self._start()

    def _llguidance_tokenizer(self):
        """llguidance's tokenizer over the model's (fast) tokenizer, its end tokens as the output's ends."""
        import transformers
        from llguidance.hf import from_tokenizer

        if not isinstance(self.lm.tokenizer, transformers.PreTrainedTokenizerFast):
            raise ConstraintError("structured output needs a fast (Rust) tokenizer; this model's is a slow one")
        return from_tokenizer(self.lm.tokenizer, n_vocab=self.lm.n_logits, eos_token=sorted(self.lm.eos_ids))

    @property
    def busy_slots(self) -> int:
        return len(self._rows)

    def generate(self, prefix: list[int], body: list[int], sampling: Sampling, limit: int) -> Iterator[StreamChunk]:
        constrained = Constrained.of(json_schema=sampling.json_schema, grammar=sampling.grammar)
        matcher = self.constraints.matcher(constrained) if constrained is not None else None
        return self.stream(Request(tuple(prefix), list(body), sampling, limit, matcher))

    # --- the engine thread --------------------------------------------------------------------

    def _has_work(self) -> bool:
        return bool(self._rows) or bool(self._waiting)

    def _end_running(self, error: BaseException) -> None:
        for row in self._rows:
            row.request.events.put(error)
        self._rows, self._cache = [], None

    def _step(self) -> None:
        torch = self.lm.torch
        with torch.inference_mode():
            self._rows = [row for row in self._rows if not self._ended(row)]
            if not self._rows:
                self._start_wave()
            else:
                self._decode()

    def _ended(self, row: _Row) -> bool:
        if row.request.cancelled:
            row.request.events.put(None)
            return True
        return False

    def _take_wave(self) -> list[Request]:
        first = self._next_waiting()
        if first is None:
            return []
        with self._work:
            wave = [r for r in self._waiting if r.prefix == first.prefix and not r.cancelled][: self.slots]
            for request in wave:
                self._waiting.remove(request)
        return wave

    def _start_wave(self) -> None:
        wave = self._take_wave()
        if not wave:
            return
        lm, torch = self.lm, self.lm.torch
        prefix = list(wave[0].prefix)
        prefix_cache = lm.prefix_cache(prefix)
        width = max(len(r.body) for r in wave)
        offsets = [width - len(r.body) for r in wave]  # padding before each row's prefix
        size = len(prefix)
        pad = lm.pad_id
        rows_ids, masks, positions = [], [], []
        for request, offset in zip(wave, offsets):
            tokens = [pad] * offset + prefix + request.body
            rows_ids.append(tokens[size:])
            masks.append([0] * offset + [1] * (len(prefix) + len(request.body)))
            positions.append([max(column - offset, 0) for column in range(size, size + width)])
        self._cache = lm.batched_prefix(prefix_cache, [min(offset, size) for offset in offsets])
        self._mask = torch.tensor(masks, device=lm.device)
        input_ids = torch.tensor(rows_ids, device=lm.device)
        position_ids = torch.tensor(positions, device=lm.device)
        logits = lm.forward(input_ids, self._cache, self._mask, position_ids)[:, -1, :]
        self._positions = position_ids[:, -1]
        self._rows = [_Row(request, lm) for request in wave]
        self.counters.largest_batch = max(self.counters.largest_batch, len(wave))
        self.counters.requests += len(wave)
        self.counters.prompt_tokens += sum(len(r.body) for r in wave)
        self._sample(logits)

    def _decode(self) -> None:
        lm, torch = self.lm, self.lm.torch
        tokens = torch.tensor([[row.produced[-1]] for row in self._rows], device=lm.device)
        self._mask = torch.cat([self._mask, torch.ones((len(self._rows), 1), dtype=self._mask.dtype, device=lm.device)], 1)
        self._positions = self._positions + 1
        logits = lm.forward(tokens, self._cache, self._mask, self._positions[:, None])[:, -1, :]
        self._sample(logits)

    def _sample(self, logits) -> None:
        """Choose each row's next token, stream it, and drop the rows that have finished; a failure in one
        row's choice ends that request only."""
        self._progressed()
        keep = []
        for index, row in enumerate(self._rows):
            if row.request.cancelled:
                row.request.events.put(None)
                continue
            try:
                kept = self._emit(row, self._choose(row, logits[index : index + 1]))
            except ConstraintError as exc:  # the request's own constraint: a 400 for it alone
                row.request.events.put(exc)
                kept = False
            except Exception as exc:
                log.exception("choosing a token failed")
                row.request.events.put(ModelFailure(f"the model failed on this request while choosing a token: {exc}"))
                kept = False
            if kept:
                keep.append(index)
        torch = self.lm.torch
        if len(keep) < len(self._rows):
            self._rows = [self._rows[i] for i in keep]
            if keep:
                chosen = torch.tensor(keep, device=self.lm.device)
                self._cache.batch_select_indices(chosen)
                self._mask, self._positions = self._mask[chosen], self._positions[chosen]
            else:
                self._cache = None

    def _choose(self, row: _Row, logits) -> int:
        torch = self.lm.torch
        scores = row.chain(row.history, logits.float())
        matcher = row.request.matcher
        if matcher is not None:
            allowed = matcher.allowed()
            if not allowed.any():
                raise ConstraintError("the grammar allows no next token: the output cannot go on and still match it")
            scores[0, torch.from_numpy(~allowed).to(scores.device)] = -float("inf")
        if not torch.isfinite(scores).any():
            raise ConstraintError("no token the grammar allows has a finite probability")
        if not is_greedy(row.sampling.temperature):
            token = int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=row.generator)[0, 0])
        else:
            token = int(scores.argmax(dim=-1)[0])
        if matcher is not None and token not in self.lm.eos_ids:
            matcher.accept(token)
        wanted = row.sampling.logprobs
        row.logprob = token_logprob(logits[0].float().cpu().numpy(), token, wanted, self.lm.piece) if wanted else None
        return token

    def _emit(self, row: _Row, token: int) -> bool:
        """Hand ``token`` to the row's stream; False when the row has finished."""
        lm, request = self.lm, row.request
        if token in lm.eos_ids:
            request.events.put(StreamChunk(lm.rest(row.produced, row.shown), tokens=0, finish="stop"))
            request.events.put(None)
            return False
        row.produced.append(token)
        self.counters.generated_tokens += 1
        if len(row.produced) >= request.limit:
            request.events.put(StreamChunk(lm.rest(row.produced, row.shown), finish="length", logprob=row.logprob))
            request.events.put(None)
            return False
        text = lm.tokenizer.decode(row.produced, skip_special_tokens=True)
        # hold back an incomplete multi-byte character until a later token completes it
        delta = "" if text.endswith("\ufffd") or not text.startswith(row.shown) else text[len(row.shown) :]
        row.shown += delta
        request.events.put(StreamChunk(delta, logprob=row.logprob))
        row.history = lm.torch.cat([row.history, lm.torch.tensor([[token]], device=lm.device)], dim=1)
        return True
