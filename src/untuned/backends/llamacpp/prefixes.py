"""The engine's resident prefixes: a URIAL prefix evaluated once into a sequence of its own (or loaded from
the disk store), kept in a small least-recently-used set, each request's slot a copy of it."""

from __future__ import annotations

from untuned.errors import ModelFailure


class PrefixSequences:
    """What :class:`~untuned.backends.llamacpp.engine.LlamaEngine` does with prefixes (it holds the state)."""

    def _prefix_sequence(self, prefix: tuple[int, ...], protected: set[tuple[int, ...]]) -> int | None:
        """The sequence holding ``prefix``, evaluating it (alone, from empty) if it is not resident."""
        seq = self._resident.get(prefix)
        if seq is not None:
            self._resident.move_to_end(prefix)
            self.counters.prefix_hits += 1
            return seq
        free = sorted(set(self._prefix_seqs) - set(self._resident.values()))
        if free:
            seq = free[0]
        else:
            pinned = protected | (self._in_use() if self.kv_budget is not None else set())  # a pool shares their cells
            victim = next((key for key in self._resident if key not in pinned), None)
            if victim is None:
                return None
            seq = self._resident.pop(victim)
        self.ctx.clear(seq)
        self.counters.prefix_misses += 1
        saved = self.store.load(prefix) if self.store is not None else None
        if saved is not None and self.ctx.set_state(seq, saved):
            self.counters.prefix_loads += 1
            self._progressed()
        else:
            if saved is not None:  # llama.cpp refused the state: the file goes, the prefix is evaluated
                self.store.reject(prefix)
            self._evaluate_prefix(seq, prefix)
        self._resident[prefix] = seq
        return seq

    def _evaluate_prefix(self, seq: int, prefix: tuple[int, ...]) -> None:
        """Evaluate ``prefix`` into the empty ``seq`` in the engine's chunks, then lay its cells out again as a
        saved state loads them (its cells from the first, in cell order). A sliding-window layer's cells wrap
        round their ring as the prefix is evaluated, and attention sums cells in cell order: without this,
        a prefix loaded from disk would sum in another order than the one evaluated, and answers differ."""
        for begin in range(0, len(prefix), self._batch.capacity):
            chunk = list(prefix[begin : begin + self._batch.capacity])
            self._batch.clear()
            self._batch.add(chunk, begin, seq, False)
            self.ctx.decode(self._batch)
            self._progressed()
        self.counters.prompt_tokens += len(prefix)
        state = self.ctx.state_of(seq)
        self.ctx.clear(seq)
        if not self.ctx.set_state(seq, state):
            raise ModelFailure("llama.cpp could not lay out the prefix it had just evaluated")
        if self.store is not None:
            self.store.save(prefix, state)
