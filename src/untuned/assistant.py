"""The library's front door: a base model plus a URIAL prompt set that answers like an assistant.

>>> from untuned import Assistant
>>> bot = Assistant.load("default", prompt="helpful")
>>> for chunk in bot.ask("What is the capital of France?"):
...     print(chunk, end="")
>>> chat = bot.chat()
>>> chat.send("Name a famous museum there.").text
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from untuned.backends import (
    Backend,
    CancellableStream,
    ChatTemplated,
    FinishReason,
    LoadOptions,
    Sampling,
    StreamChunk,
    TokenLogprob,
    load_backend,
)
from untuned.conversation import Conversation, RenderedPrompt, render_prefix
from untuned.errors import PromptTooLongError, UntunedError
from untuned.prompt import PromptSet, load_prompt
from untuned.stopping import StopScanner, clean_answer

log = logging.getLogger(__name__)


class Completion:
    """One streamed answer. Iterate for text chunks; afterwards the attributes are filled in.

    Stop strings never appear in the stream. With ``clean=True`` the final :attr:`text` is also
    tidied by :func:`clean_answer` (a dangling fence line removed), and the stream holds back
    whitespace at the ends, so the streamed text and :attr:`text` agree but for that fence.
    """

    def __init__(
        self,
        pieces: Iterator[StreamChunk],
        *,
        stops: tuple[str, ...] = (),
        clean: bool = True,
        on_done: Callable[[Completion], None] | None = None,
    ) -> None:
        self._pieces = pieces
        self._scanner = StopScanner(stops, hold_whitespace=clean)
        self._clean = clean
        self._on_done = on_done
        self._chunks: list[str] = []
        self._consumed = False
        self.finish_reason: FinishReason | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens = 0
        self.started = time.perf_counter()
        self.logprobs: list[TokenLogprob] = []  # with Sampling.logprobs: each generated token's
        self.first_token_seconds: float | None = None
        self.last_token_seconds: float | None = None
        self.seconds: float | None = None

    def __iter__(self) -> Iterator[str]:
        if self._consumed:
            yield from self._chunks
            return
        self._consumed = True
        finish: FinishReason = "length"
        try:
            for piece in self._pieces:
                if piece.prompt_tokens is not None:
                    self.prompt_tokens = piece.prompt_tokens
                self.completion_tokens += piece.tokens
                if piece.logprob is not None:
                    self.logprobs.append(piece.logprob)
                if piece.tokens:
                    self.last_token_seconds = time.perf_counter() - self.started
                    if self.first_token_seconds is None:
                        self.first_token_seconds = self.last_token_seconds
                shown = self._scanner.feed(piece.text)
                if shown:
                    self._chunks.append(shown)
                    yield shown
                if self._scanner.stopped:
                    finish = "stop"
                    break
                if piece.finish is not None:
                    finish = piece.finish
            tail = self._scanner.flush()
            if tail:
                self._chunks.append(tail)
                yield tail
        finally:
            close = getattr(self._pieces, "close", None)
            if close is not None:
                close()
        self.finish_reason = finish
        self.seconds = time.perf_counter() - self.started
        if self._on_done is not None:
            self._on_done(self)

    def cancel(self) -> None:
        """Stop the answer from any thread: a backend whose stream can be cancelled frees the request's place
        at once, even while it waits or evaluates its prompt; any other stops at its next chunk."""
        if isinstance(self._pieces, CancellableStream):
            self._pieces.cancel()

    @property
    def text(self) -> str:
        """The whole answer (consumes the stream if nobody has)."""
        if not self._consumed:
            for _ in self:
                pass
        joined = "".join(self._chunks)
        return clean_answer(joined) if self._clean else joined

    @property
    def decode_tokens_per_second(self) -> float | None:
        """Generation speed after the first token: prompt evaluation and time to first token excluded."""
        if self.first_token_seconds is None or self.last_token_seconds is None or self.completion_tokens < 2:
            return None
        span = self.last_token_seconds - self.first_token_seconds
        return (self.completion_tokens - 1) / span if span > 0 else None

    def __str__(self) -> str:
        return self.text


QUESTION_ROOM = 256  # tokens a pool's prompt set leaves for the question, beside max_tokens for the answer


class Assistant:
    """A backend, a URIAL prompt set and sampling settings."""

    def __init__(self, backend: Backend, prompt: PromptSet, sampling: Sampling | None = None, *, check_fits: bool = True) -> None:
        """``check_fits``: refuse a prompt set too long for the window now (off for a model answering in its
        own chat template, which never shows the prompt set)."""
        self.backend = backend
        self.prompt = prompt
        self.sampling = sampling or Sampling()
        self._fitted: dict[tuple[str, int], PromptSet] = {}  # pools cut to the window, by content and max_tokens
        if check_fits:
            self.check_fits()

    def check_fits(self) -> None:
        """Refuse, before any question, a prompt set whose examples and ``max_tokens`` cannot fit the model's
        window together (PromptTooLongError with the numbers); nothing is ever cut silently. A pool of kept
        examples (``pool:NAME``) is served with as many of its examples, first to last, as leave room for a
        question and the answer (:meth:`fitted`, which says how many were left out). A backend that cannot
        tokenize here (a server without a tokenize endpoint) is checked per request instead."""
        self.prompt = self.fitted(self.prompt)
        prefix = self._prefix_tokens(self.prompt)
        if prefix is not None and prefix + self.sampling.max_tokens > self.backend.context_length:
            raise PromptTooLongError(self.prompt.name, prefix, self.sampling.max_tokens, self.backend.context_length)

    def _prefix_tokens(self, prompt: PromptSet) -> int | None:
        if not self.backend.context_length:
            return None
        try:
            return len(self.backend.tokenize(render_prefix(prompt), add_special=True))
        except UntunedError:
            return None

    def fitted(self, prompt: PromptSet) -> PromptSet:
        """A pool's prompt set cut to the examples that fit the window with ``max_tokens`` and QUESTION_ROOM tokens
        for the question (the first ones, in the pool's order), with a warning naming how many were left out;
        any other set as it is."""
        if not (prompt.source or "").startswith("pool:") or not prompt.examples:
            return prompt
        key = (prompt.content_hash, self.sampling.max_tokens)  # a server asks for every request: tokenized once
        if key not in self._fitted:
            if len(self._fitted) >= 16:
                self._fitted.clear()
            self._fitted[key] = self._fit(prompt)
        return self._fitted[key]

    def _fit(self, prompt: PromptSet) -> PromptSet:
        budget = (self.backend.context_length or 0) - self.sampling.max_tokens - QUESTION_ROOM
        whole = self._prefix_tokens(prompt)
        if whole is None or whole <= budget:
            return prompt
        low, high = 0, len(prompt.examples)  # the most examples whose prefix fits: low fits, high does not
        while high - low > 1:
            middle = (low + high) // 2
            size = self._prefix_tokens(dataclasses.replace(prompt, examples=prompt.examples[:middle]))
            low, high = (middle, high) if size is not None and size <= budget else (low, middle)
        log.warning(
            "%s: %d of its %d examples fit the %d-token window with max_tokens %d and %d for the question; %d left out",
            prompt.source,
            low,
            len(prompt.examples),
            self.backend.context_length,
            self.sampling.max_tokens,
            QUESTION_ROOM,
            len(prompt.examples) - low,
        )
        return dataclasses.replace(prompt, examples=prompt.examples[:low])

    @classmethod
    def load(
        cls,
        model: str = "default",
        *,
        prompt: str | Path | PromptSet = "helpful",
        sampling: Sampling | None = None,
        options: LoadOptions | None = None,
    ) -> Assistant:
        """Load a model (``default``, a ``.gguf`` path, ``hf:org/name``, a folder, or a URL)."""
        prompt_set = prompt if isinstance(prompt, PromptSet) else load_prompt(prompt)
        return cls(load_backend(model, options), prompt_set, sampling)

    def conversation(self) -> Conversation:
        return Conversation(self.prompt)

    def complete(
        self, conversation: Conversation, *, sampling: Sampling | None = None, on_done: Callable[[Completion], None] | None = None
    ) -> Completion:
        """Answer the last user turn of ``conversation`` (which is not modified)."""
        settings = sampling or self.sampling
        # The backend gets the format's stops too: remote servers then stop on their side.
        settings = settings.model_copy(update={"stop": tuple(dict.fromkeys(conversation.fmt.stop + settings.stop))})
        return self.complete_prompt(conversation.render(), sampling=settings, on_done=on_done)

    def complete_prompt(
        self,
        rendered: RenderedPrompt,
        *,
        sampling: Sampling | None = None,
        clean: bool = True,
        on_done: Callable[[Completion], None] | None = None,
    ) -> Completion:
        """Stream a continuation of already rendered text, stopping at ``sampling.stop``."""
        settings = sampling or self.sampling
        return Completion(self.backend.stream(rendered, settings), stops=settings.stop, clean=clean, on_done=on_done)

    def complete_chat(self, messages: list[dict[str, str]], *, sampling: Sampling | None = None) -> Completion:
        """Answer ``messages`` in the model's own chat template (an instruct model), not with URIAL."""
        if not isinstance(self.backend, ChatTemplated):
            raise UntunedError(f"{self.backend.name}: its backend cannot use the model's chat template")
        settings = sampling or self.sampling
        return Completion(self.backend.stream(self.backend.chat_prompt(messages), settings), stops=settings.stop)

    def ask(self, query: str, *, sampling: Sampling | None = None) -> Completion:
        """Answer one query with no history. Iterate the result for streamed text."""
        conversation = self.conversation()
        conversation.add_user(query)
        return self.complete(conversation, sampling=sampling)

    def chat(self) -> Chat:
        """A multi-turn conversation that remembers its answers."""
        return Chat(self)

    def close(self) -> None:
        self.backend.close()


class Chat:
    """Multi-turn chat: each answer joins the conversation once it has been fully streamed."""

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant
        self.conversation = assistant.conversation()

    def send(self, message: str, *, sampling: Sampling | None = None) -> Completion:
        turns = self.conversation.turns
        if turns and turns[-1].role == "user":  # the previous answer was abandoned mid-stream
            turns.pop()
        self.conversation.add_user(message)

        def remember(done: Completion) -> None:
            self.conversation.add_assistant(done.text)

        try:
            return self.assistant.complete(self.conversation, sampling=sampling, on_done=remember)
        except Exception:
            turns.pop()
            raise

    def reset(self) -> None:
        self.conversation.reset()

    def use_prompt(self, prompt: PromptSet) -> None:
        """Switch prompt set; the conversation so far is kept."""
        self.assistant.prompt = prompt
        self.conversation.prompt = prompt
