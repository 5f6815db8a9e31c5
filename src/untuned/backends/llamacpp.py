"""llama.cpp backend (llama-cpp-python, GGUF files): the default.

The constant URIAL prefix is evaluated once per prompt set and its KV state kept: later
queries and later turns only evaluate what follows it. Snapshots of the state after each
prefix (a small LRU) make switching between prompt sets, or scoring in between, cheap too.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import random
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from untuned.backend import (
    LoadOptions,
    ModelSpec,
    Piece,
    RowScoring,
    Sampling,
    default_gguf_path,
)
from untuned.conversation import RenderedPrompt
from untuned.errors import BackendUnavailableError, ContextOverflowError, ModelLoadError, ModelNotFoundError

log = logging.getLogger(__name__)
_native_log = logging.getLogger("untuned.llama_cpp.native")
_LOG_CALLBACK = None  # keeps the ctypes callback alive
DEFAULT_MAX_CTX = 8192
SCORE_ROWS = 64  # logits rows turned into scores at a time: 64 x 262k floats = 64 MiB


def _route_native_logs(llama_cpp) -> None:
    """Send llama.cpp's own log lines to Python logging instead of stderr."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        _native_log.debug("%s", text.decode("utf-8", "replace").rstrip())

    _LOG_CALLBACK = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def check_gguf_file(path: Path) -> None:
    """Raise a clear error when ``path`` is missing or not a GGUF file."""
    if not path.exists():
        raise ModelNotFoundError(f"GGUF file not found: {path}. Check the path, or use --model default.")
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is not a file.")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(
            f"{path} is not a GGUF file (it does not start with the GGUF signature). "
            "Re-download it, or convert the model with llama.cpp's convert_hf_to_gguf.py."
        )


def open_llama(path: Path, n_ctx: int, threads: int | None = None):
    """A llama-cpp-python ``Llama`` for ``path`` (all cores by default, full sliding-window cache),
    with llama.cpp's own log routed to Python logging. Clear errors for a missing or bad file."""
    check_gguf_file(path)
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailableError("llama.cpp models need llama-cpp-python: pip install llama-cpp-python") from exc
    _route_native_logs(llama_cpp)
    threads = threads or len(os.sched_getaffinity(0))  # llama-cpp-python's default is half the cores

    try:
        return llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, swa_full=True, verbose=False
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(
            f"llama.cpp could not load {path} ({exc}). The file may be truncated or corrupt, or its architecture "
            "too new for this llama-cpp-python: re-download it or upgrade llama-cpp-python."
        ) from exc


@dataclass(frozen=True)
class _Snapshot:
    tokens: tuple[int, ...]
    state: bytes


class LlamaCppBackend(RowScoring):
    """A GGUF model in llama.cpp. Thread-safe: one generation or scoring at a time."""

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int | None = None,
        threads: int | None = None,
        name: str | None = None,
        reuse_prefix: bool = True,
    ) -> None:
        path = Path(path).expanduser()
        self.llm = open_llama(path, n_ctx or DEFAULT_MAX_CTX, threads)
        import llama_cpp  # already imported by open_llama

        self._llama_cpp = llama_cpp
        self.path = path
        self.name = name or path.name
        trained = self.llm._model.n_ctx_train()
        if n_ctx is None and 0 < trained < DEFAULT_MAX_CTX:
            self.llm.close()
            self.llm = open_llama(path, trained, threads)
        self.context_length: int | None = self.llm.n_ctx()
        self.vocab_size = self.llm.n_vocab()
        self._lock = threading.RLock()
        self._snapshots: OrderedDict[tuple[int, ...], _Snapshot] = OrderedDict()
        self._prefix_ids: OrderedDict[str, list[int]] = OrderedDict()  # tokenized prefixes, bounded like the snapshots
        self.max_snapshots = 4
        self.reuse_prefix = reuse_prefix  # False recomputes the prefix every time (for benchmarks)

    @classmethod
    def from_spec(cls, spec: ModelSpec, options: LoadOptions) -> LlamaCppBackend:
        if spec.kind == "default":
            return cls(default_gguf_path(), n_ctx=options.n_ctx, threads=options.threads, name="gemma-3-270m-base")
        if spec.kind != "gguf":
            raise ModelLoadError(
                f"the llama.cpp backend reads .gguf files; {spec.location!r} is not one (try --backend transformers)."
            )
        return cls(spec.location, n_ctx=options.n_ctx, threads=options.threads)

    # --- tokens ----------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=False)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.llm.detokenize(list(tokens)).decode("utf-8", "replace")

    def _prompt_ids(self, prompt: RenderedPrompt) -> tuple[list[int], list[int]]:
        prefix = self._prefix_ids.get(prompt.prefix)
        if prefix is None:
            prefix = self.tokenize(prompt.prefix, add_special=True)
            self._prefix_ids[prompt.prefix] = prefix
            while len(self._prefix_ids) > self.max_snapshots:
                self._prefix_ids.popitem(last=False)
        return prefix, self.tokenize(prompt.body)

    # --- prefix state ------------------------------------------------------------------------

    def _cached_tokens(self) -> list[int]:
        return self.llm.input_ids[: self.llm.n_tokens].tolist()

    def _ensure_prefix(self, prefix: list[int]) -> None:
        """Make the KV cache start with ``prefix``: keep it, restore a snapshot, or evaluate it once."""
        key = tuple(prefix)
        if not self.reuse_prefix:
            self.llm.reset()
            self.llm.eval(prefix)
            return
        if self._cached_tokens()[: len(prefix)] == prefix:
            # Forget what followed the prefix: the body is always evaluated from the prefix on,
            # so an answer never depends on what was asked before (llama.cpp's numerics vary
            # slightly with how tokens are batched).
            self.llm.n_tokens = len(prefix)
            return
        snapshot = self._snapshots.get(key)
        if snapshot is not None:
            self._snapshots.move_to_end(key)
            self._restore(snapshot)
            return
        self.llm.reset()
        self.llm.eval(prefix)
        self._snapshots[key] = self._save()
        while len(self._snapshots) > self.max_snapshots:
            self._snapshots.popitem(last=False)

    # Sequence-level state (KV cells of sequence 0): restores exactly. The whole-context state
    # calls (llama_state_get/set_data) did not give the same logits back for gemma-3's
    # sliding-window cache in our tests.
    def _save(self) -> _Snapshot:
        lib, ctx = self._llama_cpp, self.llm._ctx.ctx
        size = lib.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = lib.llama_state_seq_get_data(ctx, buffer, size, 0)
        return _Snapshot(tokens=tuple(self._cached_tokens()), state=bytes(buffer)[:written])

    def _restore(self, snapshot: _Snapshot) -> None:
        lib, ctx = self._llama_cpp, self.llm._ctx.ctx
        lib.llama_memory_seq_rm(lib.llama_get_memory(ctx), 0, -1, -1)
        buffer = (ctypes.c_uint8 * len(snapshot.state)).from_buffer_copy(snapshot.state)
        if lib.llama_state_seq_set_data(ctx, buffer, len(snapshot.state), 0) != len(snapshot.state):
            raise RuntimeError("llama.cpp refused to restore a saved prefix state")
        count = len(snapshot.tokens)
        self.llm.input_ids[:count] = snapshot.tokens
        self.llm.n_tokens = count
        self.llm._requires_eval = True  # logits must be refreshed by decoding before sampling

    # --- generation --------------------------------------------------------------------------

    def stream(self, prompt: RenderedPrompt, sampling: Sampling) -> Iterator[Piece]:
        prefix, body = self._prompt_ids(prompt)
        ids = prefix + body
        if self.context_length is not None and len(ids) >= self.context_length:
            raise ContextOverflowError(len(ids), self.context_length)
        return self._generate(prefix, ids, sampling)

    def _generate(self, prefix: list[int], ids: list[int], sampling: Sampling) -> Iterator[Piece]:
        limit = min(sampling.max_tokens, (self.context_length or 0) - len(ids))
        with self._lock:
            self._ensure_prefix(prefix)
            self.llm.set_seed(sampling.seed if sampling.seed is not None else random.getrandbits(31))
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            vocab = self.llm._model.vocab
            produced = 0
            yield Piece("", tokens=0, prompt_tokens=len(ids))
            tokens = self.llm.generate(
                ids,
                temp=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                min_p=0.0,
                repeat_penalty=sampling.repetition_penalty,
            )
            try:
                for token in tokens:
                    if self._llama_cpp.llama_vocab_is_eog(vocab, token):
                        yield Piece(decoder.decode(b"", final=True), tokens=0, finish="stop")
                        return
                    produced += 1
                    text = decoder.decode(self.llm.detokenize([token]))
                    if produced >= limit:
                        yield Piece(text + decoder.decode(b"", final=True), finish="length")
                        return
                    yield Piece(text)
            finally:
                tokens.close()

    # --- scoring -----------------------------------------------------------------------------

    def _logit_rows(self, ids: list[int], start: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, raw logits rows predicting them), one forward pass in batches of ``n_batch``.

        Each rows array is a view into llama.cpp's buffer, valid until the next step.
        """
        with self._lock:
            llm = self.llm
            llm.reset()
            llm._ctx.kv_cache_clear()
            evaluated = 0
            try:
                for begin in range(0, len(ids) - 1, llm.n_batch):
                    batch = ids[begin : begin + llm.n_batch]
                    # row r predicts the token at position begin + r + 1; only rows that predict a
                    # scored position ask for logits (a 262k-wide output row is costly)
                    positions = np.arange(begin, begin + len(batch)) + 1
                    wanted = (positions >= start) & (positions < len(ids))
                    llm._batch.set_batch(batch=batch, n_past=begin, logits_all=False)
                    for row, flag in enumerate(wanted):
                        llm._batch.batch.logits[row] = bool(flag)
                    llm._ctx.decode(llm._batch)
                    evaluated = begin + len(batch)
                    outputs = positions[wanted]
                    if not len(outputs):
                        continue
                    logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(outputs), self.vocab_size))
                    for row in range(0, len(outputs), SCORE_ROWS):
                        yield outputs[row : row + SCORE_ROWS], logits[row : row + SCORE_ROWS]
            finally:
                llm.input_ids[:evaluated] = ids[:evaluated]
                llm.n_tokens = evaluated  # the cache now holds these tokens; generation may reuse them
                llm._requires_eval = True

    def close(self) -> None:
        with self._lock:
            self._snapshots.clear()
            self.llm.close()
