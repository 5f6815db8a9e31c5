"""Speculative decoding's drafts: tokens guessed cheaply, then checked by the model in one batch.

A greedy request's next ``k`` tokens are guessed by a *drafter*; the engine decodes the request's last token and
the guesses together (``k + 1`` rows of one sequence) and keeps each guess while it equals the model's own
greedy choice at that row, so the answer is the one the model gives alone, token for token, only sooner when
guesses hold. Two drafters:

* :class:`PromptLookup` (``--draft prompt-lookup``): the tokens that followed the latest earlier occurrence of
  the sequence's last few tokens, in its own prompt and answer so far. No second model; it pays off where
  answers repeat their context (URIAL's markers, code, quoted text).
* :class:`DraftModel` (``--draft MODEL``): a small GGUF model with the same vocabulary (TinyLlama-1.1B for
  Llama-2-70B) decoding greedily in a context of its own, one sequence per slot, brought up to date with the
  request's tokens before each guess.

Guesses stay within :data:`MAX_DRAFT` tokens: with the request's last token that is ``EXACT_ROWS`` rows, the
batch size whose CPU kernels give each row exactly what it gets alone.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from untuned.backends.llamacpp.native import Batch, Context, FedSequence, NativeModel
from untuned.errors import InvalidInput, ModelLoadError

MAX_DRAFT = 6  # guesses per step: with the last token, 7 rows (the engine's EXACT_ROWS)
PROMPT_LOOKUP = "prompt-lookup"


class Drafter(Protocol):
    """Guesses up to ``limit`` tokens that follow ``history`` (every token of sequence ``seq`` so far)."""

    def propose(self, seq: int, history: list[int], limit: int) -> list[int]: ...

    def close(self) -> None: ...


class PromptLookup:
    """The ``limit`` tokens after the latest earlier occurrence of the last ``n`` tokens of the history, for ``n``
    from ``longest`` down to ``shortest`` (a longer match first: it predicts better)."""

    def __init__(self, longest: int = 3, shortest: int = 2) -> None:
        if not 1 <= shortest <= longest:
            raise InvalidInput(f"prompt lookup needs 1 <= shortest ({shortest}) <= longest ({longest})")
        self.sizes = range(longest, shortest - 1, -1)

    def propose(self, seq: int, history: list[int], limit: int) -> list[int]:
        tokens = np.asarray(history, dtype=np.int64)
        for n in self.sizes:
            if len(tokens) <= n or limit < 1:
                continue
            # windows that end before the last token, so that each match has a continuation
            windows = np.lib.stride_tricks.sliding_window_view(tokens[:-1], n)
            hits = np.flatnonzero((windows == tokens[-n:]).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n
                return tokens[start : start + limit].tolist()
        return []

    def close(self) -> None:
        pass


class DraftModel:
    """A small model of the same vocabulary guessing greedily, one KV stream per slot of the engine."""

    def __init__(
        self, model: NativeModel, target: NativeModel, *, n_seq: int, n_ctx_seq: int, threads: int, kv_type: str, flash_attn: str
    ):
        check_same_vocabulary(model, target)
        self.model = model
        self.ctx = Context(
            model, n_ctx_seq=n_ctx_seq, n_seq=n_seq, n_batch=512, threads=threads, kv_type=kv_type, flash_attn=flash_attn
        )
        self.batch = Batch(model.lib, 512)
        self.sequences = [FedSequence(self.ctx, seq) for seq in range(n_seq)]

    def propose(self, seq: int, history: list[int], limit: int) -> list[int]:
        sequence = self.sequences[seq]
        keep = sequence.rewind(history, len(history) - 1)  # the last token is fed again for its logits
        pending = history[keep:]
        for begin in range(0, len(pending), self.batch.capacity):
            chunk = pending[begin : begin + self.batch.capacity]
            flags = np.zeros(len(chunk), dtype=bool)
            flags[-1] = begin + len(chunk) == len(pending)
            sequence.feed(self.batch, chunk, flags)
        guesses: list[int] = []
        while True:
            token = int(self.ctx.logits_row(self.batch.n - 1).argmax())
            if self.model.is_end(token):
                return guesses
            guesses.append(token)
            if len(guesses) >= limit:
                return guesses
            sequence.feed(self.batch, [token], True)

    def close(self) -> None:
        self.ctx.close()
        self.model.close()


def check_same_vocabulary(draft: NativeModel, target: NativeModel) -> None:
    """ModelLoadError unless every token id means the same bytes in both models: a guess is checked by its id."""
    if draft.n_vocab != target.n_vocab:
        raise ModelLoadError(
            f"--draft {draft.path.name}: its vocabulary has {draft.n_vocab} tokens and {target.path.name}'s "
            f"{target.n_vocab}; a draft model must share the model's tokenizer (e.g. TinyLlama-1.1B for Llama-2)"
        )
    differ = next((t for t in range(draft.n_vocab) if draft.special_text(t) != target.special_text(t)), None)
    if differ is not None:
        raise ModelLoadError(
            f"--draft {draft.path.name}: token {differ} is {draft.special_text(differ)!r} there and "
            f"{target.special_text(differ)!r} in {target.path.name}; a draft model must share the model's tokenizer"
        )
