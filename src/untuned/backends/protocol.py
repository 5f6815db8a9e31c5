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

Loading: :class:`LoadOptions` is every backend's settings as a user gives them; a built-in backend takes
its own subset (:meth:`LoadOptions.narrow` with :data:`LLAMA_CPP_OPTIONS`, :data:`TRANSFORMERS_OPTIONS`
or :data:`REMOTE_OPTIONS`), and a setting it does not use, given a value, is refused with its name. A
plugin's factory receives the whole :class:`LoadOptions` and may narrow it the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from untuned.conversation import RenderedPrompt
from untuned.errors import UntunedError
from untuned.placement.fit import DEFAULT_MAX_CTX  # declared where the plan reads it; re-exported here

FinishReason = Literal["stop", "length"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]
KvType = Literal["f16", "q8_0", "q4_0"]
FlashAttention = Literal["auto", "on", "off"]

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


class LoadOptions(BaseModel):
    """How to load a model; every field has a sensible default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str | None = Field(None, description="llama.cpp, transformers, remote or a plugin's (default: from the model spec).")
    n_ctx: int | None = Field(
        None, ge=64, description=f"Context window of each sequence, in tokens (default: the model's, at most {DEFAULT_MAX_CTX})."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads (llama.cpp); None = all cores.")
    device: str = Field("auto", description="transformers backend: cpu, cuda, cuda:N or auto.")
    dtype: Dtype = Field(
        "auto", description="transformers backend: the weights' type; auto = bfloat16 on a GPU, float32 on a CPU."
    )
    gpu_layers: Annotated[int, Field(ge=-1)] | Literal["auto"] = Field(
        "auto",
        description="llama.cpp: layers offloaded to the GPU (-1 = all, 0 = none; auto = as many as `untuned plan` "
        "fits in the GPU's free memory, 0 on a CPU-only build); N needs llama-cpp-python built for a GPU (make run GPU=cuda).",
    )
    cpu_moe: Annotated[int, Field(ge=-1)] | Literal["auto"] = Field(
        "auto",
        description="llama.cpp, MoE models: keep the expert weights of the first N layers in RAM while those layers run "
        "on the GPU (-1 = every layer's; auto = as planned with --gpu-layers auto, else 0).",
    )
    parallel: int = Field(1, ge=1, le=64, description="Requests a local model decodes together in one batch.")
    batch_invariant: bool = Field(
        False,
        description="llama.cpp: decode at most EXACT_ROWS requests per step, the "
        "batch size whose kernels give each request exactly its answer alone, so that answers "
        "do not depend on how many are decoded at once (batch runs: the default of generate).",
    )
    kv_budget: int | None = Field(
        None,
        ge=256,
        description="llama.cpp: KV cache cells shared on demand by all "
        "requests (one pool); None: each slot its own stream of the whole window (exact).",
    )
    kv_type: KvType = Field(
        "f16",
        description="llama.cpp: the KV cache's number type; q8_0 takes about half the memory of f16, q4_0 about "
        "a quarter (both need flash attention).",
    )
    flash_attn: FlashAttention = Field(
        "auto",
        description="llama.cpp: flash attention; auto = on when the KV cache is quantized (llama.cpp needs it "
        "there), off with f16 (the path whose batch invariance is tested).",
    )
    draft: str | None = Field(
        None,
        description="llama.cpp: speculative decoding of greedy answers (the same answers, sooner): 'prompt-lookup' "
        "guesses from the prompt and answer so far; a GGUF model (a path, hf:org/repo:QUANT, default) with the "
        "same tokenizer guesses as a draft, e.g. TinyLlama-1.1B for Llama-2-70B. None: off.",
    )
    prefix_cache: bool = Field(
        True,
        description="llama.cpp: save evaluated prompt prefixes to disk ($UNTUNED_CACHE_DIR or ~/.cache/untuned/prefixes) "
        "and load them instead of evaluating them again (after a restart, in another process); checked before use.",
    )
    prefix_cache_gib: float = Field(
        4.0, ge=0, description="llama.cpp: the most GiB the prefix cache holds (least recently used dropped)."
    )
    remote_model: str | None = Field(None, description="Model name on a remote server (default: its first).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the remote server's API key.")
    concurrency: int = Field(4, ge=1, description="Most requests in flight at once (remote).")
    timeout: float = Field(120.0, gt=0, description="Seconds before a remote request times out.")
    max_retries: int = Field(4, ge=0, description="Retries on 429, 5xx and timeouts (remote), with backoff.")
    backend_options: tuple[tuple[str, str | int | float | bool], ...] = Field(
        (),
        description="A plugin backend's own settings, NAME=VALUE (repeatable), declared and checked by its Options "
        "record (see docs/architecture.md, 'Adding a backend'); the built-in backends take none.",
    )

    @field_validator("backend_options", mode="before")
    @classmethod
    def _pairs(cls, value):
        """A mapping (a plan's table), NAME=VALUE strings (the command line; VALUE read as JSON where it is JSON,
        else as text) or pairs."""
        if isinstance(value, dict):
            return tuple(value.items())
        pairs = []
        for entry in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(entry, str):
                name, sep, text = entry.partition("=")
                if not sep or not name:
                    raise ValueError(f"backend option {entry!r} is not NAME=VALUE")
                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = text
                entry = (name, parsed if isinstance(parsed, (str, int, float, bool)) else text)
            pairs.append(entry)
        return tuple(pairs)

    def own(self, record: type[Narrowed], backend: str) -> Narrowed:
        """A plugin backend's own settings (``backend_options``) as its ``record`` declares them: a name it does
        not declare, or a bad value, is refused with the name and what it takes."""
        given = dict(self.backend_options)
        unknown = [name for name in given if name not in record.model_fields]
        if unknown:
            raise UntunedError(
                f"the {backend} backend has no setting {', '.join(map(repr, unknown))} (--backend-option); its own "
                f"settings are {', '.join(record.model_fields) or 'none'}."
            )
        try:
            return record(**given)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise UntunedError(
                f"the {backend} backend's setting {first['loc'][0]!r} (--backend-option): {first['msg']}"
            ) from None

    def narrow(self, accepted: type[Narrowed], backend: str) -> Narrowed:
        """These options as ``accepted``, the settings one backend takes. A setting it does not take that
        was given a value other than its default is refused with an error naming it, never ignored."""
        unused = [
            name
            for name, info in type(self).model_fields.items()
            if name != "backend" and name not in accepted.model_fields and getattr(self, name) != info.default
        ]
        if unused:
            flag = {"backend_options": "backend-option"}
            named = ", ".join(f"{name} (--{flag.get(name, name.replace('_', '-'))})" for name in unused)
            raise UntunedError(
                f"the {backend} backend does not use {named}; its settings are {', '.join(accepted.model_fields)}."
            )
        return accepted(**{name: getattr(self, name) for name in accepted.model_fields})


Narrowed = TypeVar("Narrowed", bound=BaseModel)


def _subset(name: str, *fields: str) -> type[BaseModel]:
    """A record of some of :class:`LoadOptions`' fields, with their types, defaults and checks."""
    chosen = {field: (LoadOptions.model_fields[field].annotation, LoadOptions.model_fields[field]) for field in fields}
    return create_model(name, __config__=ConfigDict(extra="forbid", frozen=True), **chosen)  # type: ignore[call-overload]


LLAMA_CPP_OPTIONS = _subset(
    "LlamaCppOptions",
    "n_ctx",
    "threads",
    "gpu_layers",
    "cpu_moe",
    "parallel",
    "batch_invariant",
    "kv_budget",
    "kv_type",
    "flash_attn",
    "draft",
    "prefix_cache",
    "prefix_cache_gib",
)
TRANSFORMERS_OPTIONS = _subset("TransformersOptions", "n_ctx", "device", "dtype", "parallel")
REMOTE_OPTIONS = _subset("RemoteOptions", "remote_model", "api_key_env", "concurrency", "timeout", "max_retries", "parallel")


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
