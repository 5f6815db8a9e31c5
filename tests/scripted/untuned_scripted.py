"""A scripted model for untuned's tests: a plugin backend registered through the ``untuned.backends``
entry-point group, as any third-party backend would be (``--model scripted:NAME``).

It does no arithmetic worth timing, so tests that use it control time themselves and run the same
on a fast or a slow machine. Its answer is a script read from the prompt, after the last
``SCRIPT:`` (up to the end of that line)::

    SCRIPT: Hello there @delay=0.05 @repeat=200:tick @wait=/tmp/go done

Plain words are emitted one token each ("word "); ``@delay=S`` sleeps S seconds before each later
token; ``@temperature`` says the sampling temperature it was asked for ("t=0.7");
``@repeat=N:WORD`` emits WORD N times; ``@wait=PATH`` blocks until PATH exists; ``@end``
ends the answer there (end of sequence); ``@abort`` ends the whole process at once with
``os.abort()``, as a native crash in an engine would (the supervised engine's tests). A prompt without a script is answered
``You said: <its last non-empty line>``.

It counts its work as an engine does (``stats``): a stream blocked in ``@wait`` makes no progress, so
``/health`` can be seen calling the engine stalled.

Tokens are UTF-8 bytes (ids 0-255) plus BOS (256) and EOS (257). Scores come from a fixed random
bigram table, so shift and scoring plumbing can be tested too.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from untuned.backends import EngineStats, LoadOptions, ModelSpec, RowScoring, Sampling, StreamChunk
from untuned.conversation import RenderedPrompt
from untuned.errors import ContextOverflowError, UnsupportedOperation

BOS, EOS, VOCAB = 256, 257, 258
_SCRIPT = re.compile(r"SCRIPT:([^\n`]*)")


def _steps(text: str) -> list[tuple[str, str]]:
    """(kind, value) steps of the prompt's script: ("say", word), ("delay", s), ("wait", path), ("end", "")."""
    found = _SCRIPT.findall(text)
    if not found:
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(("#", "`"))]
        return [("say", word) for word in ["You", "said:", *(lines[-1].split() if lines else [])]]
    steps: list[tuple[str, str]] = []
    for item in found[-1].split():
        if item.startswith("@delay="):
            steps.append(("delay", item[7:]))
        elif item.startswith("@wait="):
            steps.append(("wait", item[6:]))
        elif item.startswith("@repeat="):
            count, _, word = item[8:].partition(":")
            steps.extend(("say", word) for _ in range(int(count)))
        elif item in ("@end", "@abort"):
            steps.append((item[1:], ""))
        else:
            steps.append(("say", item))
    return steps


class ScriptedOptions(BaseModel):
    """The scripted backend's own settings (--backend-option NAME=VALUE, or a plan's backend_options), declared
    here as simonw/llm's models declare their Options: untuned checks them against this record."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    shout: bool = Field(False, description="Say every scripted answer in capitals.")


class ScriptedBackend(RowScoring):
    """Answers by script; see the module docstring."""

    Options = ScriptedOptions

    def __init__(self, name: str = "scripted", *, n_ctx: int | None = None, options: ScriptedOptions | None = None) -> None:
        self.options = options or ScriptedOptions()
        self.name = f"scripted-{name}" if name else "scripted"
        self.context_length: int | None = n_ctx or 4096
        self.vocab_size = VOCAB
        self._table = np.random.default_rng(20261125).normal(0.0, 3.0, size=(VOCAB, VOCAB)).astype(np.float32)
        self._running = 0
        self._last_progress = time.monotonic()
        self._counters = EngineStats()

    @classmethod
    def from_spec(cls, spec: ModelSpec, options: LoadOptions) -> ScriptedBackend:
        return cls(spec.location, n_ctx=options.n_ctx, options=options.own(cls.Options, "scripted"))

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return ([BOS] if add_special else []) + list(text.encode("utf-8"))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return bytes(t for t in tokens if t < 256).decode("utf-8", "replace")

    def stream(self, prompt: RenderedPrompt, sampling: Sampling) -> Iterator[StreamChunk]:
        if sampling.logit_bias:
            raise UnsupportedOperation("the scripted model does not support logit_bias (it answers by script)")
        total = len(self.tokenize(prompt.text, add_special=True))
        if self.context_length is not None and total >= self.context_length:
            raise ContextOverflowError(total, self.context_length)
        told = ("say", f"t={sampling.temperature:g}")
        steps = [told if step == ("say", "@temperature") else step for step in _steps(prompt.text)]
        if self.options.shout:
            steps = [(kind, text.upper()) if kind == "say" else (kind, text) for kind, text in steps]
        return self._play(steps, total, min(sampling.max_tokens, (self.context_length or 1 << 30) - total))

    def stats(self) -> EngineStats:
        since = time.monotonic() - self._last_progress if self._running else 0.0
        return dataclasses.replace(self._counters, busy_slots=self._running, seconds_without_progress=since)

    def _play(self, steps: list[tuple[str, str]], prompt_tokens: int, limit: int) -> Iterator[StreamChunk]:
        self._running += 1
        self._last_progress = time.monotonic()
        self._counters.requests += 1
        try:
            yield from self._steps(steps, prompt_tokens, limit)
        finally:
            self._running -= 1

    def _steps(self, steps: list[tuple[str, str]], prompt_tokens: int, limit: int) -> Iterator[StreamChunk]:
        yield StreamChunk("", tokens=0, prompt_tokens=prompt_tokens)
        delay, produced = 0.0, 0
        for kind, value in steps:
            if kind == "delay":
                delay = float(value)
            elif kind == "wait":
                while not Path(value).exists():
                    time.sleep(0.01)
            elif kind == "end":
                break
            elif kind == "abort":
                os.abort()
            else:
                time.sleep(delay)
                produced += 1
                self._last_progress = time.monotonic()
                self._counters.generated_tokens += 1
                if produced >= limit:
                    yield StreamChunk(value + " ", finish="length")
                    return
                yield StreamChunk(value + " ")
        yield StreamChunk("", tokens=0, finish="stop")

    def _logit_rows(self, ids: list[int], start: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        positions = np.arange(start, len(ids))
        for begin in range(0, len(positions), 64):
            chunk = positions[begin : begin + 64]
            yield chunk, self._table[np.asarray(ids)[chunk - 1]]

    def close(self) -> None:
        pass
