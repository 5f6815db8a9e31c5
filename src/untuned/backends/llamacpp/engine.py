"""Continuous batching over one llama.cpp context: the llama.cpp backend's engine.

The context holds one sequence per *slot* (a request being answered) and one per *resident
prefix* (a URIAL prefix, evaluated once). Its KV cache is not unified: every sequence keeps its
own stream of cells. When a request starts, its slot becomes a copy of its prefix's stream — the
cells, their layout and their bytes (``llama_memory_seq_cp`` across streams) — and then evaluates
the request's body and generates. What follows from that:

* **Exact by construction.** A prefix is always evaluated alone, from an empty stream, in the
  same chunks; a slot's attention reads only its own stream. So a request alone in the engine
  computes bit for bit the same answer whatever the cache held before (another prompt set,
  scoring, earlier requests), on any CPU. (A shared, unified cache would place a request's cells
  wherever they were free, and llama.cpp's vectorised sums round differently for other cell
  positions.)
* **Batched decoding.** Each step evaluates one chunk of a newly admitted request's prompt on its
  own, then decodes the next token of every generating request in one ``llama_decode``. A request's
  answer never depends on the other requests' contents. Up to 7 requests decoded together each get
  exactly their answer alone (see :class:`NativeModel`); from 8 on, llama.cpp's CPU kernels round
  differently for the larger batch (BENCHMARKS.md P6 counts how often that changes an answer).
* **Prefixes** live in a small LRU of their own sequences; evicting one never disturbs the slots
  copied from it.

With a **KV budget** (``kv_budget``) the sequences share one pool of cells: a slot's copy of its
prefix shares the prefix's cells, and a request is admitted when the pool holds its prompt and whole
answer, else it waits. Memory no longer grows with slots × window; the price is exactness (a
request's cells sit wherever they were free, and sums round otherwise for other cell positions).
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from untuned.backends import Sampling, StreamChunk
from untuned.backends.batching import BatchingEngine, Request, RequestStream
from untuned.backends.llamacpp.draft import MAX_DRAFT, Drafter
from untuned.backends.llamacpp.native import Batch, Context, NativeModel
from untuned.backends.llamacpp.prefix_store import PrefixStore
from untuned.backends.llamacpp.prefixes import PrefixSequences
from untuned.backends.llamacpp.sampling import Slot, greedy_choice, llguidance_tokenizer, sampler_chain
from untuned.backends.protocol import is_greedy
from untuned.backends.scoring import token_logprob
from untuned.constraint import Constrained, Constraints, masked_choice
from untuned.errors import ConstraintError, ContextOverflowError, InvalidInput, ModelClosedError, ModelFailure

log = logging.getLogger(__name__)
EXACT_ROWS = 7  # requests decoded in one llama_decode that each get exactly their answer alone (the docstring)


class LlamaEngine(PrefixSequences, BatchingEngine):
    """Answers ``slots`` requests at once over one model, ``prefixes`` kept resident (the module docstring)."""

    thread_name = "untuned-llama-engine"
    greedy_here = True  # greedy decoding without llama.cpp's sampler (same choices, faster); False for tests

    def __init__(
        self,
        model: NativeModel,
        *,
        n_ctx_seq: int,
        threads: int,
        slots: int = 1,
        prefixes: int = 2,
        n_batch: int = 512,
        keep_prefixes: bool = True,
        kv_budget: int | None = None,
        max_rows: int | None = None,
        kv_type: str = "f16",
        flash_attn: str = "auto",
        store: PrefixStore | None = None,
        drafter: Drafter | None = None,
    ) -> None:
        if slots < 1 or prefixes < 1:
            raise InvalidInput("an engine needs at least one slot and one prefix sequence")
        super().__init__(slots)
        self.model, self.lib = model, model.lib
        self.max_rows = max_rows  # at most this many requests per llama_decode (batch invariance); None: all
        self.ctx = Context(
            model,
            n_ctx_seq=n_ctx_seq,
            n_seq=slots + prefixes,
            n_batch=n_batch,
            threads=threads,
            pool=kv_budget,
            kv_type=kv_type,
            flash_attn=flash_attn,
        )
        # llama.cpp allocates a pool in whole blocks of cells (256): the budget is what it made, so a request
        # is measured against the cells that exist (a budget of 3000 is a pool of 3072)
        self.kv_budget = self.ctx.n_ctx if kv_budget is not None else None
        self.requested_kv_budget = kv_budget
        self.n_ctx_seq = min(n_ctx_seq, self.ctx.n_ctx_seq)
        self.store = store  # evaluated prefixes saved to and loaded from disk (None: never)
        self.keep_prefixes = keep_prefixes  # False evaluates the prefix for every request (benchmarks)
        self._slots = [Slot(seq) for seq in range(slots)]
        self._prefix_seqs = list(range(slots, slots + prefixes))
        self._resident: OrderedDict[tuple[int, ...], int] = OrderedDict()
        self._batch = Batch(self.lib, n_batch)
        self._admissions = 0
        self.constraints = Constraints(lambda: llguidance_tokenizer(model), model.n_vocab)  # structured output
        self.drafter = drafter  # speculative decoding of greedy requests (None: off)
        self._start()

    # --- what callers use ----------------------------------------------------------------------

    @property
    def slots(self) -> int:
        return len(self._slots)

    @property
    def busy_slots(self) -> int:
        return sum(slot.request is not None for slot in self._slots)

    def generate(self, prefix: list[int], body: list[int], sampling: Sampling, limit: int) -> RequestStream:
        """Stream the answer to ``prefix + body``; closing or cancelling the stream cancels the request.
        What llama.cpp would fail on is refused here, before the request reaches the batch (ValueError):
        token ids outside the vocabulary, a grammar with ignore_eos, a request the KV pool can never hold."""
        if not prefix and not body:
            raise InvalidInput("the prompt is empty: there is nothing to continue")
        self.model.check_ids([*prefix, *body], "prompt")
        self.model.check_ids([token for token, _ in sampling.logit_bias], "logit_bias")
        if sampling.ignore_eos and (sampling.json_schema or sampling.grammar):
            raise InvalidInput(
                "ignore_eos cannot go with a JSON format: the grammar ends the answer where the JSON ends, and "
                "with the end of generation masked no token would be left to choose"
            )
        total = len(prefix) + len(body)
        if self.kv_budget is not None and total + limit > self.kv_budget:
            raise ContextOverflowError(total + limit, self.kv_budget + 1)
        if not body:  # the last prompt token must be decoded in the slot to give logits
            prefix, body = prefix[:-1], prefix[-1:]
        constrained = Constrained.of(json_schema=sampling.json_schema, grammar=sampling.grammar)
        matcher = self.constraints.matcher(constrained) if constrained is not None else None
        return self.stream(Request(tuple(prefix), list(body), sampling, limit, matcher))

    @contextmanager
    def exclusive(self) -> Iterator[tuple[Context, Batch, int]]:
        """The context, its batch and an empty sequence of a free slot, with generation paused meanwhile."""
        with self._work:
            while True:
                if self._closing:
                    raise ModelClosedError("the model has been closed")
                slot = next((s for s in self._slots if not s.busy), None)
                if slot is not None:
                    slot.reserved = True
                    break
                self._work.wait()
        try:
            with self._context_lock:
                self.ctx.clear(slot.seq)
                try:
                    yield self.ctx, self._batch, slot.seq
                finally:
                    self.ctx.clear(slot.seq)
        finally:
            with self._work:
                slot.reserved = False
                self._work.notify_all()

    # --- the engine thread ---------------------------------------------------------------------

    def _has_work(self) -> bool:
        if any(slot.request is not None for slot in self._slots):
            return True
        return bool(self._waiting) and not self._starved and any(not slot.busy for slot in self._slots)

    def _end_running(self, error: BaseException) -> None:
        for slot in self._slots:
            if slot.request is not None:
                self._finish(slot, error)

    def _release(self) -> None:
        self.ctx.close()
        if self.drafter is not None:
            self.drafter.close()

    def _reap(self) -> None:
        for slot in self._slots:
            if slot.request is not None and slot.request.cancelled:
                self._finish(slot, None)

    def _compact(self) -> None:
        """Keep the running requests in the lowest slots: llama.cpp decodes a batch spread over separate KV
        streams in runs of consecutive sequences, one pass per run. A request moves with a copy of its
        stream (cells, layout and bytes), so what it computes does not change."""
        while True:
            with self._work:
                hole = next((s for s in self._slots if not s.busy), None)
                top = next((s for s in reversed(self._slots) if s.request is not None), None)
                if hole is None or top is None or top.seq < hole.seq:
                    return
                self.ctx.clone(top.seq, hole.seq)
                hole.take_over(top)
            self.ctx.clear(top.seq)  # its cells only: the copy above is made from the bytes at the next decode

    def _finish(self, slot: Slot, event: BaseException | None) -> None:
        request = slot.request
        if slot.sampler is not None:
            self.lib.llama_sampler_free(slot.sampler)
            slot.sampler = None
        slot.matcher = None
        self.ctx.clear(slot.seq)
        with self._work:
            slot.request = None
            self._starved = False  # its cells are free: the first waiting request may fit now
            self._work.notify_all()
        if request is not None:
            request.events.put(event)

    def _in_use(self) -> set[tuple[int, ...]]:
        return {slot.request.prefix for slot in self._slots if slot.request is not None}

    def _room_for(self, request: Request) -> bool:
        """With a KV budget: whether the pool holds this request's prompt and whole answer beside the running
        ones (resident prefixes not in use are evicted to make room). Always True without a budget.
        (A request that could not fit an empty pool was refused by :meth:`generate`.)"""
        if self.kv_budget is None:
            return True
        running = sum(len(s.request.body) + s.request.limit for s in self._slots if s.request is not None)
        need = len(request.body) + request.limit + (0 if request.prefix in self._resident else len(request.prefix))
        idle = [key for key in self._resident if key not in self._in_use() and key != request.prefix]
        while running + sum(map(len, self._resident)) + need > self.kv_budget:
            if not idle:
                return False
            self.ctx.clear(self._resident.pop(idle.pop(0)))
        return True

    def _admit(self) -> None:
        copied: set[tuple[int, ...]] = set()  # prefixes whose copy waits for the next decode
        while True:
            request = self._next_waiting()
            with self._work:
                slot = next((s for s in self._slots if not s.busy), None)
                if request is None or slot is None:
                    return
                if not self._room_for(request):
                    self._starved = True  # no busy waiting: a finishing request wakes the engine
                    return
                slot.request = request  # claimed: no exclusive user can take it now
            if request.prefix:
                try:
                    source = self._prefix_sequence(request.prefix, copied)
                except Exception as exc:  # this request's prefix could not be evaluated: it alone fails
                    log.exception("evaluating a prefix failed")
                    with self._work:
                        self._waiting.popleft()
                    self._finish(slot, ModelFailure(f"the model failed on this request's prompt: {exc}"))
                    continue
                if source is None:  # every prefix sequence is the source of a pending copy
                    with self._work:
                        slot.request = None
                    return
                self.ctx.clone(source, slot.seq)
                copied.add(request.prefix)
                if not self.keep_prefixes:
                    del self._resident[request.prefix]
            else:
                self.ctx.clear(slot.seq)
            with self._work:
                self._waiting.popleft()
            try:
                self._begin(slot, request)
            except Exception as exc:  # this request's sampler could not be made; the others go on
                self._finish(slot, ModelFailure(f"could not start the request: {exc}"))

    def _begin(self, slot: Slot, request: Request) -> None:
        sampling = request.sampling
        seed = sampling.seed if sampling.seed is not None else random.getrandbits(31)
        slot.penalty = sampling.repetition_penalty
        slot.recent.clear()
        slot.matcher = request.matcher
        if not is_greedy(sampling.temperature) or not self.greedy_here:
            slot.sampler = sampler_chain(
                self.model,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                repetition_penalty=sampling.repetition_penalty,
                seed=seed,
                ignore_eos=sampling.ignore_eos,
                logit_bias=sampling.logit_bias,
            )
        slot.pending, slot.pos, slot.generating, slot.produced = list(request.body), len(request.prefix), False, 0
        slot.history = [*request.prefix, *request.body]
        slot.decoder.reset()
        self._admissions += 1
        slot.admitted = self._admissions
        self.counters.requests += 1

    def _step(self) -> None:
        """One chunk of the earliest admitted prompt, evaluated alone, then the next token of every
        generating request, in one batch (rows that llama.cpp computes independently of each other)."""
        self._reap()
        self._compact()
        self._admit()
        prefilling = sorted((s for s in self._slots if s.request is not None and not s.generating), key=lambda s: s.admitted)
        if prefilling:
            try:
                self._prefill(prefilling[0])  # evaluated alone: a failure is this request's
            except Exception as exc:
                log.exception("evaluating a prompt failed")
                if prefilling[0].request is not None:
                    self._finish(prefilling[0], ModelFailure(f"the model failed on this request's prompt: {exc}"))
        generating = [slot for slot in self._slots if slot.request is not None and slot.generating]
        if self.drafter is not None:
            generating = [slot for slot in generating if not self._speculate(slot)]
        if generating:
            step = self.max_rows or len(generating)
            for begin in range(0, len(generating), step):  # rows decoded together never exceed max_rows
                self._decode_isolated(generating[begin : begin + step])

    def _decode_isolated(self, slots: list[Slot]) -> None:
        """Decode ``slots`` together; if that fails, each alone, so that only a request that fails by
        itself is ended (llama.cpp leaves the cache as it was when a decode fails). A failure in choosing
        one request's token after the decode is that request's alone (see :meth:`_choose_and_take`)."""
        try:
            self._decode(slots)
            return
        except Exception:
            if len(slots) == 1:
                raise
            log.exception("a batched decode failed; decoding its requests one by one")
        for slot in slots:
            try:
                self._decode([slot])
            except Exception as exc:
                self._finish(slot, ModelFailure(f"the model failed on this request: {exc}"))

    def _speculate(self, slot: Slot) -> bool:
        """Decode a greedy request's last token with the drafter's guesses after it, alone in one batch, and keep
        the guesses while each equals the model's own choice at its row (:mod:`.draft`); the cells of the first
        wrong guess on are forgotten. False when there is nothing to guess (the request is decoded with the
        others). A failure ends this request only."""
        if slot.sampler is not None or slot.matcher is not None:
            return False
        room = min(MAX_DRAFT, slot.request.limit - slot.produced - 1)
        try:
            guesses = self.drafter.propose(slot.seq, slot.history, room) if room > 0 else []
            if not guesses:
                return False
            batch = self._batch
            batch.clear()
            first, base = batch.add([*slot.pending, *guesses], slot.pos, slot.seq, True), slot.pos
            self.ctx.decode(batch)
        except Exception as exc:
            log.exception("a speculative step failed")
            self._finish(slot, ModelFailure(f"the model failed on this request: {exc}"))
            return True
        self._progressed()
        self.counters.draft_proposed += len(guesses)
        for row in range(len(guesses) + 1):
            slot.pending, slot.pos = [], base + row + 1
            self._choose_and_take(slot, first + row)
            if slot.request is None or row == len(guesses) or slot.pending[0] != guesses[row]:
                break
            self.counters.draft_accepted += 1
        if slot.request is not None:
            self.ctx.trim(slot.seq, slot.pos)
        return True

    def _prefill(self, slot: Slot) -> None:
        batch = self._batch
        batch.clear()
        count = min(batch.capacity, len(slot.pending))
        last = count == len(slot.pending)
        flags = np.zeros(count, dtype=bool)
        flags[-1] = last
        batch.add(slot.pending[:count], slot.pos, slot.seq, flags)
        self.ctx.decode(batch)
        self._progressed()
        self.counters.prompt_tokens += count
        slot.pending, slot.pos = slot.pending[count:], slot.pos + count
        if last:
            self._choose_and_take(slot, count - 1)

    def _decode(self, slots: list[Slot]) -> None:
        batch = self._batch
        batch.clear()
        rows = [batch.add(slot.pending, slot.pos, slot.seq, True) for slot in slots]
        self.ctx.decode(batch)
        self._progressed()
        self.counters.largest_batch = max(self.counters.largest_batch, len(slots))
        for slot, row in zip(slots, rows):
            slot.pending, slot.pos = [], slot.pos + 1
            self._choose_and_take(slot, row)

    def _choose_and_take(self, slot: Slot, row: int) -> None:
        """Choose ``slot``'s next token from logits ``row`` and hand it out; a failure ends this request only."""
        try:
            self._take(slot, self._choose(slot, row))
        except ConstraintError as exc:  # the request's own constraint: a 400 for it, nothing for the others
            if slot.request is not None:
                self._finish(slot, exc)
        except Exception as exc:
            log.exception("choosing a token failed")
            if slot.request is not None:
                self._finish(slot, ModelFailure(f"the model failed on this request while choosing a token: {exc}"))

    def _choose(self, slot: Slot, row: int) -> int:
        """The next token: the matcher's mask (if any) on the row, then llama.cpp's sampler or greedy here; a
        row with nothing finite left to choose from is an error for this request, never a native abort."""
        logits = self.ctx.logits_row(row)
        if slot.sampler is not None:
            token = masked_choice(logits, slot.matcher, lambda: self.lib.llama_sampler_sample(slot.sampler, self.ctx.ctx, row))
        else:
            token = masked_choice(logits, slot.matcher, lambda: self._greedy(slot, row), greedy=True)
        if slot.matcher is not None and not self.model.is_end(token):
            slot.matcher.accept(token)
        wanted = slot.request.sampling.logprobs
        slot.logprob = token_logprob(logits, token, wanted, self.model.piece) if wanted else None
        return token

    def _greedy(self, slot: Slot, row: int) -> int:
        sampling = slot.request.sampling
        ends = self.model.end_tokens if sampling.ignore_eos else None
        row_logits = self.ctx.logits_row(row)
        return greedy_choice(row_logits, slot.recent, slot.penalty, masked=ends, bias=sampling.logit_bias)

    def _take(self, slot: Slot, token: int) -> None:
        request = slot.request
        if self.model.is_end(token):
            request.events.put(StreamChunk(slot.decoder.decode(b"", final=True), tokens=0, finish="stop"))
            self._finish(slot, None)
            return
        slot.produced += 1
        slot.recent.append(token)
        slot.history.append(token)
        self.counters.generated_tokens += 1
        text = slot.decoder.decode(self.model.piece(token))
        if slot.produced >= request.limit:
            request.events.put(StreamChunk(text + slot.decoder.decode(b"", final=True), finish="length", logprob=slot.logprob))
            self._finish(slot, None)
            return
        request.events.put(StreamChunk(text, logprob=slot.logprob))
        slot.pending, slot.generating = [token], True
