"""What a backend is: the Protocol every model implementation follows, the records it speaks in, and
the optional capabilities it may declare. A plugin author reads the whole contract here.

A backend wraps one model. It tokenizes, streams generated text for a rendered URIAL prompt, and
scores given tokens (per-position log-probabilities and ranks, for shift analysis). Beyond that, a
backend may have any of the capabilities below; each is a Protocol that callers check with
``isinstance`` once, never by probing for attributes:

- :class:`ChatTemplated`: knows its model's chat template (instruct models: judges, aligned models).
- :class:`Batched`: answers several requests at once (``untuned serve`` admits that many).
- :class:`CountsWork`: counts its engine's work and load (``/health``, ``/metrics``).
- :class:`TokenPieces`: the bytes of each token and the vocabulary's size (logprobs, shift KL).
- :class:`TopKDistributions`: its distributions hold only each position's top-k (a server's).
- :class:`BatchScoring`: scores several sequences in one pass (shift analysis).
- :class:`TargetScoring`: ranks chosen tokens along a teacher-forced pass (one model's choice under another).
- :class:`SchemaConstrained`: holds its output to a JSON schema (``response_format``, local judges).
- :class:`MemoryReporting`: says how its cache is laid out and what it takes (start-up line).
- :class:`BatchInvariance`: can hold each answer independent of what is decoded beside it (batch runs).

Loading: :class:`LoadOptions` (declared in :mod:`untuned.backends.options`, re-exported here) is every backend's
settings as a user gives them; a built-in backend takes its own subset, and a setting it does not use, given a
value, is refused with its name. A plugin's factory receives the whole :class:`LoadOptions`, narrows it the
same way, and reads its own settings with :meth:`LoadOptions.own`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from untuned.backends.options import (  # noqa: F401  (re-exported: the records a backend is loaded with)
    DEFAULT_MAX_CTX,
    LLAMA_CPP_OPTIONS,
    REMOTE_OPTIONS,
    TRANSFORMERS_OPTIONS,
    Dtype,
    FlashAttention,
    KvType,
    LoadOptions,
)
from untuned.conversation import RenderedPrompt

FinishReason = Literal["stop", "length"]

# Temperatures below this are greedy: logits divided by a tiny temperature overflow to infinity, and a sampler's
# probabilities become NaN (llama.cpp then picks a token no grammar allowed, and aborts).
MIN_TEMPERATURE = 1e-3


def is_greedy(temperature: float) -> bool:
    """Whether ``temperature`` means greedy decoding (0, or below MIN_TEMPERATURE)."""
    return temperature < MIN_TEMPERATURE


class Sampling(BaseModel):
    """How to sample new tokens. The defaults are greedy decoding with a mild repetition penalty."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(
        0.0, ge=0.0, le=5.0, description=f"0 means greedy (always the likeliest token), as does anything below {MIN_TEMPERATURE}."
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass; 1 turns it off.")
    top_k: int = Field(0, ge=0, description="Sample among the k most likely tokens; 0 turns it off.")
    max_tokens: int = Field(512, ge=1, description="Most new tokens to generate.")
    repetition_penalty: float = Field(1.1, gt=0.0, le=3.0, description="1 turns it off; >1 discourages repeats.")
    seed: int | None = Field(None, ge=0, description="Random seed for sampling; None picks one at random.")
    stop: tuple[str, ...] = Field((), description="Extra stop strings, on top of the URIAL format's own.")
    ignore_eos: bool = Field(
        False,
        description="Go on past the end-of-sequence token, to max_tokens (benchmarks of "
        "equal work, as vLLM's and llama.cpp's ignore_eos); backends that cannot, refuse.",
    )
    json_schema: str | None = Field(
        None, description="Hold the output to JSON matching this JSON schema (text); backends that cannot, refuse."
    )
    grammar: str | None = Field(
        None,
        max_length=262_144,
        description="Hold the output to this Lark grammar (llguidance's, with %json for JSON-schema parts; tool calls "
        "use it); not with json_schema. Backends that cannot, refuse.",
    )
    logit_bias: tuple[tuple[Annotated[int, Field(ge=0)], Annotated[float, Field(ge=-100, le=100)]], ...] = Field(
        (),
        description="(token id, bias) pairs added to those tokens' logits before choosing, as OpenAI's logit_bias "
        "(-100 all but bans a token, 100 all but forces it); reported log-probabilities stay the model's own. "
        "Backends that cannot, refuse.",
    )
    logprobs: int = Field(
        0,
        ge=0,
        le=20,
        description="Report each generated token's log-probability and its k likeliest alternatives "
        "(0: none); under the model's own distribution, before sampling settings.",
    )


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token with its log-probability and the likeliest tokens at its position."""

    token: int
    piece: bytes  # the token's own bytes (a multi-byte character may span tokens)
    logprob: float
    top: tuple[tuple[int, bytes, float], ...] = ()  # (token, bytes, log-probability), likeliest first


@dataclass(frozen=True)
class StreamChunk:
    """One step of a backend's stream: some text and how many tokens made it.

    The first chunk may carry ``prompt_tokens``; the last carries ``finish`` when the backend
    itself ended the stream (end-of-sequence token: "stop"; token limit: "length"). With
    ``Sampling.logprobs``, a chunk that holds a token carries its :class:`TokenLogprob`.
    """

    text: str
    tokens: int = 1
    finish: FinishReason | None = None
    prompt_tokens: int | None = None
    logprob: TokenLogprob | None = None


@dataclass(frozen=True)
class TokenScores:
    """Per-position scores of ``token_ids`` under a model, each given all tokens before it.

    ``ranks`` are 1-based (1 = the model's most likely token; a tie goes the token's way).
    ``top_ids``/``top_logprobs`` hold the model's k most likely tokens at each position, most likely
    first. ``ranks_worst`` counts tied tokens ahead too (None where the backend cannot tell: a server).
    ``sequence_ranks``: where other tokens than the sequence's own were scored (``score_targets``), the
    ranks of the sequence's own tokens, from the same pass.
    """

    token_ids: np.ndarray  # (n,) int
    logprobs: np.ndarray  # (n,) float
    ranks: np.ndarray  # (n,) int
    top_ids: np.ndarray  # (n, k) int
    top_logprobs: np.ndarray  # (n, k) float
    ranks_worst: np.ndarray | None = None  # (n,) int
    sequence_ranks: np.ndarray | None = None  # (n,) int


@runtime_checkable
class Backend(Protocol):
    """What untuned needs from a model. Implementations: llama.cpp, transformers, remote, plugins."""

    name: str
    context_length: int | None

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def stream(self, prompt: RenderedPrompt, sampling: Sampling) -> Iterator[StreamChunk]: ...

    def score(self, tokens: Sequence[int], *, start: int = 1, top_k: int = 5) -> TokenScores: ...

    def distributions(self, tokens: Sequence[int], *, start: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, log-probability rows over the vocabulary) for positions ``start``.., in chunks."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class CancellableStream(Protocol):
    """A stream (what ``Backend.stream`` returns) that :meth:`cancel` ends from any thread, whatever its
    request is doing (queued, evaluating its prompt, generating): the engine frees its place at once.
    Streams that are plain generators stop only when closed between two chunks."""

    def cancel(self) -> None: ...


@runtime_checkable
class ChatTemplated(Protocol):
    """A backend that knows its model's own chat template (instruct models: judges, aligned models)."""

    def chat_prompt(self, messages: list[dict[str, str]], *, shared: int = 0) -> RenderedPrompt:
        """``messages`` in the model's chat template, ending where its answer begins; the first ``shared``
        messages, the same for many requests, become the prompt's cacheable prefix where they can."""
        ...

    def tokenize_prompt(self, prompt: RenderedPrompt) -> list[int]:
        """The token ids ``stream`` would feed the model for ``prompt``."""
        ...

    def template_text(self) -> str | None:
        """The chat template itself (None when the model has none)."""
        ...


def prompt_ids(backend: Backend, prompt: RenderedPrompt) -> list[int]:
    """The token ids ``backend`` reads for ``prompt``: its own ids, the chat template's split where the
    backend has one (prefix and body tokenized apart, as ``stream`` feeds them), else the text with BOS."""
    if prompt.ids is not None:
        return list(prompt.ids)
    if isinstance(backend, ChatTemplated):
        return backend.tokenize_prompt(prompt)
    return backend.tokenize(prompt.text, add_special=True)


@dataclass
class EngineStats:
    """Counters since the engine started, and its load now (what ``/health`` and ``/metrics`` show)."""

    slots: int = 1
    busy_slots: int = 0
    waiting: int = 0
    requests: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0  # evaluated: bodies and prefixes
    prefix_hits: int = 0
    prefix_misses: int = 0
    prefix_loads: int = 0  # of the misses: prefixes loaded from the disk cache instead of evaluated
    largest_batch: int = 0  # most requests decoded in one step
    draft_proposed: int = 0  # speculative decoding: tokens guessed
    draft_accepted: int = 0  # of those, the ones the model confirmed
    seconds_without_progress: float = 0.0  # while it has work: since it last evaluated a prompt chunk or made a token


@runtime_checkable
class OwnTokenizer(Protocol):
    """A local model whose own tokenizer can be asked directly (AlignTDS's protocol reads text as it does)."""

    def encode_text(self, text: str) -> list[int]:
        """``text`` as the model's tokenizer encodes it by default: special tokens added where it adds them (BOS
        for most), special-token texts in it ("<s>") read as those tokens."""
        ...

    def end_text(self) -> str:
        """The text of the model's end-of-sequence token ("</s>")."""
        ...


@runtime_checkable
class Batched(Protocol):
    """Answers ``parallel`` requests at once (in one batch, or in flight to a server)."""

    parallel: int


@runtime_checkable
class CountsWork(Protocol):
    """Counts what its engine has done and holds now (``/health``, ``/metrics``)."""

    def stats(self) -> EngineStats: ...


@runtime_checkable
class TopKDistributions(Protocol):
    """Its ``distributions`` hold only the top-k of each position (a server's logprobs), not the whole
    vocabulary: KL figures computed from them cover the top-k only, and say so."""

    top_k_only: bool


@runtime_checkable
class TokenPieces(Protocol):
    """Knows each token's own bytes (a character may span tokens) and how many tokens there are."""

    vocab_size: int

    def piece(self, token: int) -> bytes: ...


@runtime_checkable
class BatchScoring(Protocol):
    """Scores several sequences in one pass (``score`` for each, batched)."""

    def score_batch(self, sequences: list[list[int]], *, starts: list[int], top_k: int = 5) -> list[TokenScores]: ...


@runtime_checkable
class TargetScoring(Protocol):
    """Ranks chosen tokens along a teacher-forced pass: at position ``start + i`` of ``tokens``, ``targets[i]``
    in place of the token that follows (a shift analysis ranks one model's first choice under another)."""

    def score_targets(self, tokens: Sequence[int], targets: Sequence[int], *, start: int = 1, top_k: int = 5) -> TokenScores: ...


@runtime_checkable
class SchemaConstrained(Protocol):
    """Honours ``Sampling.json_schema`` and ``Sampling.grammar`` by constraining decoding; refuses what it cannot
    enforce."""

    def check_constraint(self, *, json_schema: str | None = None, grammar: str | None = None) -> None:
        """Raise ConstraintError, naming the construct, for a JSON schema or grammar the backend cannot enforce
        (or that no output can match)."""
        ...


@runtime_checkable
class MemoryReporting(Protocol):
    """Says how its cache is laid out and how much memory the model's context took."""

    kv_summary: str


@runtime_checkable
class BatchInvariance(Protocol):
    """Can decode so that each request gets exactly the answer it would get alone, whatever is decoded
    beside it (set ``batch_invariant``; batch runs do by default, a server does not, for speed)."""

    batch_invariant: bool
