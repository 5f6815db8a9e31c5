"""Thin wrappers over llama.cpp's C API (through llama-cpp-python's ctypes bindings).

Only what the engine needs: a model and its vocabulary, a context whose KV cache keeps one
stream of cells per sequence, a reusable batch with numpy views on its arrays, and sampler
chains. Native log lines go to Python logging instead of stderr.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
from pathlib import Path

import numpy as np

from untuned.errors import BackendUnavailableError, ModelLoadError, ModelNotFoundError

log = logging.getLogger(__name__)
_native_log = logging.getLogger("untuned.llama_cpp.native")
_LOG_CALLBACK = None  # keeps the ctypes callback alive
PENALTY_WINDOW = 64  # repetition penalty looks at this many of the latest generated tokens


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailableError("llama.cpp models need llama-cpp-python: pip install llama-cpp-python") from exc
    _route_native_logs(llama_cpp)
    return llama_cpp


def _route_native_logs(lib) -> None:
    """Send llama.cpp's own log lines to Python logging instead of stderr."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return

    @lib.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        _native_log.debug("%s", text.decode("utf-8", "replace").rstrip())

    _LOG_CALLBACK = callback
    lib.llama_log_set(callback, ctypes.c_void_p(0))


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


def default_threads() -> int:
    """Every core this process may run on (llama-cpp-python's own default is half of them)."""
    return len(os.sched_getaffinity(0))


class NativeModel:
    """A GGUF model's weights and vocabulary. Tokenizing is thread-safe (it only reads).

    The weights are loaded without llama.cpp's "extra buffer types": those repack them for CPU matrix
    kernels that quantize the activations of 4 or more rows together, so a row decoded beside others
    came out different from the same row decoded alone (logits off by up to 0.7 on gemma-3-270m).
    Without them, up to 7 requests decoded together each get exactly their answer alone (tested);
    from 8 rows on, llama.cpp's CPU kernels take another path that rounds differently. Decoding is as
    fast (measured: 58.6 vs 58.8 tokens/s alone, 102.6 vs 102.2 for eight together); prompt
    evaluation is ~5-10% slower.
    """

    def __init__(self, path: Path, *, gpu_layers: int = 0) -> None:
        check_gguf_file(path)
        self.lib = lib = import_llama_cpp()
        lib.llama_backend_init()
        if gpu_layers and not lib.llama_supports_gpu_offload():
            raise BackendUnavailableError(
                f"--gpu-layers {gpu_layers} asks for a GPU, but this llama-cpp-python was built for the CPU only: "
                "rebuild it with a GPU backend (make run GPU=cuda, or GPU=metal on a Mac), or leave --gpu-layers out."
            )
        params = lib.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        params.use_extra_bufts = False  # see the class docstring
        self.model = lib.llama_model_load_from_file(str(path).encode("utf-8"), params)
        if not self.model:
            raise ModelLoadError(
                f"llama.cpp could not load {path}. The file may be truncated or corrupt, or its architecture "
                "too new for this llama-cpp-python: re-download it or upgrade llama-cpp-python."
            )
        self.path = path
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = lib.llama_model_n_ctx_train(self.model)
        self._pieces: dict[int, bytes] = {}

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = False) -> list[int]:
        data = text.encode("utf-8")
        room = len(data) + 16
        for _ in range(2):
            out = (ctypes.c_int32 * room)()
            n = self.lib.llama_tokenize(self.vocab, data, len(data), out, room, add_special, parse_special)
            if n >= 0:
                return list(out[:n])
            room = -n
        raise RuntimeError(f"llama.cpp could not tokenize a text of {len(data)} bytes")

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as nothing). Cached."""
        found = self._pieces.get(token)
        if found is None:
            buffer = ctypes.create_string_buffer(256)
            n = self.lib.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
            found = self._pieces[token] = buffer.raw[: max(n, 0)]
        return found

    def chat_template(self) -> str | None:
        """The Jinja chat template in the GGUF metadata, if the model has one."""
        found = self.lib.llama_model_chat_template(self.model, None)
        return found.decode("utf-8") if found else None

    def special_text(self, token: int) -> str:
        buffer = ctypes.create_string_buffer(256)
        n = self.lib.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, True)
        return buffer.raw[: max(n, 0)].decode("utf-8", "replace")

    def bos_eos(self) -> tuple[str, str]:
        """The texts of the BOS and EOS tokens (what chat templates call bos_token, eos_token)."""
        bos, eos = self.lib.llama_vocab_bos(self.vocab), self.lib.llama_vocab_eos(self.vocab)
        return (self.special_text(bos) if bos >= 0 else ""), (self.special_text(eos) if eos >= 0 else "")

    def is_end(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    @functools.cached_property
    def end_tokens(self) -> np.ndarray:
        """Every end-of-generation token id (masked out when a request ignores the end)."""
        return np.asarray([t for t in range(self.n_vocab) if self.lib.llama_vocab_is_eog(self.vocab, t)], dtype=np.int64)

    def close(self) -> None:
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None


class Batch:
    """A llama_batch whose arrays are owned here and seen through numpy, one sequence per token."""

    def __init__(self, lib, capacity: int) -> None:
        self.capacity = capacity
        self._token = np.zeros(capacity, dtype=np.int32)
        self._pos = np.zeros(capacity, dtype=np.int32)
        self._n_seq = np.ones(capacity, dtype=np.int32)
        self._seq = np.zeros(capacity, dtype=np.int32)
        self._logits = np.zeros(capacity, dtype=np.int8)
        seq_base = self._seq.ctypes.data
        self._seq_pointers = (ctypes.POINTER(ctypes.c_int32) * capacity)(
            *[ctypes.cast(seq_base + 4 * i, ctypes.POINTER(ctypes.c_int32)) for i in range(capacity)]
        )
        self.struct = lib.llama_batch()
        self.struct.token = self._token.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.struct.embd = None
        self.struct.pos = self._pos.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.struct.n_seq_id = self._n_seq.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.struct.seq_id = ctypes.cast(self._seq_pointers, ctypes.POINTER(ctypes.POINTER(ctypes.c_int32)))
        self.struct.logits = self._logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    @property
    def room(self) -> int:
        return self.capacity - self.n

    def add(self, tokens: list[int], start: int, seq: int, outputs: np.ndarray | bool) -> int:
        """Append ``tokens`` at positions ``start``.. of ``seq``; ``outputs`` flags the rows that give logits.
        Returns the batch index of the first appended token."""
        first, count = self.n, len(tokens)
        end = first + count
        self._token[first:end] = tokens
        self._pos[first:end] = np.arange(start, start + count)
        self._seq[first:end] = seq
        self._logits[first:end] = outputs
        self.n = end
        return first

    def outputs_before(self, index: int) -> int:
        """How many logits rows the tokens before batch row ``index`` produce."""
        return int(self._logits[:index].sum())


def resident_bytes() -> int:
    """This process's resident memory (Linux; 0 where /proc is not there)."""
    try:
        pages = int(open("/proc/self/statm").read().split()[1])
    except OSError:
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


class Context:
    """A llama_context with ``n_seq`` sequences, each in its own KV stream of ``n_ctx_seq`` cells, or
    (``pool``) all in one KV pool of ``pool`` cells that they share on demand."""

    def __init__(self, model: NativeModel, *, n_ctx_seq: int, n_seq: int, n_batch: int, threads: int,
                 pool: int | None = None) -> None:  # fmt: skip
        lib = self.lib = model.lib
        params = lib.llama_context_default_params()
        params.n_ctx = pool if pool is not None else n_ctx_seq * n_seq
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.n_outputs_max_per_seq = 0
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = pool is not None  # else one stream per sequence: see the engine's docstring
        params.swa_full = False
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.no_perf = True
        before = resident_bytes()
        self.ctx = lib.llama_init_from_model(model.model, params)
        self.memory_bytes = resident_bytes() - before  # the KV cache and compute buffers, as the process sees them
        if not self.ctx:
            raise ModelLoadError(
                f"llama.cpp could not create a context of {n_seq} x {n_ctx_seq} tokens for {model.path.name} "
                "(out of memory?). Use a smaller --n-ctx or fewer parallel slots."
            )
        self.memory = lib.llama_get_memory(self.ctx)
        self.n_ctx_seq = lib.llama_n_ctx_seq(self.ctx)
        self.n_vocab = model.n_vocab
        self.n_batch = n_batch

    def decode(self, batch: Batch) -> None:
        batch.struct.n_tokens = batch.n
        code = self.lib.llama_decode(self.ctx, batch.struct)
        if code != 0:
            raise RuntimeError(f"llama_decode failed with code {code} on a batch of {batch.n} tokens")

    def logits(self, rows: int) -> np.ndarray:
        """The logits rows of the last decode (one per flagged token, in batch order): a view."""
        pointer = self.lib.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(pointer, shape=(rows, self.n_vocab))

    def logits_row(self, index: int) -> np.ndarray:
        """The logits of batch row ``index`` of the last decode: a writable view."""
        return np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,))

    def clear(self, seq: int) -> None:
        self.lib.llama_memory_seq_rm(self.memory, seq, -1, -1)

    def clone(self, source: int, target: int) -> None:
        """Make ``target`` a copy of ``source``: its cells, their layout and their data."""
        self.lib.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_free(self.ctx)
            self.ctx = None


TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data


class Grammar:
    """A llama.cpp grammar sampler used on its own: it checks the token chosen greedily, and only when
    that token breaks the grammar filters the whole vocabulary (as llama.cpp's own server does)."""

    def __init__(self, model: NativeModel, grammar: str) -> None:
        self.lib = model.lib
        self.sampler = self.lib.llama_sampler_init_grammar(model.vocab, grammar.encode("utf-8"), b"root")
        if not self.sampler:
            raise ValueError("llama.cpp could not parse the grammar made from the JSON schema")
        self._one = np.zeros(1, dtype=TOKEN_DATA)

    def _apply(self, candidates: np.ndarray) -> None:
        array = self.lib.llama_token_data_array(
            candidates.ctypes.data_as(self.lib.llama_token_data_p), len(candidates), -1, False
        )
        self.lib.llama_sampler_apply(self.sampler, ctypes.byref(array))

    def allows(self, token: int) -> bool:
        self._one["id"], self._one["logit"] = token, 0.0
        self._apply(self._one)
        return bool(np.isfinite(self._one["logit"][0]))

    def best(self, logits: np.ndarray) -> int:
        """The likeliest token the grammar allows (``logits``: the whole row)."""
        candidates = np.empty(len(logits), dtype=TOKEN_DATA)
        candidates["id"], candidates["logit"], candidates["p"] = np.arange(len(logits)), logits, 0.0
        self._apply(candidates)
        return int(candidates["id"][candidates["logit"].argmax()])

    def accept(self, token: int) -> None:
        self.lib.llama_sampler_accept(self.sampler, token)

    def close(self) -> None:
        if self.sampler:
            self.lib.llama_sampler_free(self.sampler)
            self.sampler = None


# The JSON-schema keywords llama-cpp-python's grammar converter enforces (or that describe only);
# any other keyword would be dropped without a word (minimum, patternProperties...), so it is refused.
SCHEMA_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems", "enum",
    "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "pattern", "format", "minLength", "maxLength",
    "title", "description", "default", "examples", "$schema", "$id", "$comment",
})  # fmt: skip


def unsupported_schema_keyword(schema: object, path: str = "schema") -> str | None:
    """The first keyword of ``schema`` the grammar could not enforce, as ``path: keyword``; None if none."""
    if isinstance(schema, list):
        return next((found for i, s in enumerate(schema) if (found := unsupported_schema_keyword(s, f"{path}[{i}]"))), None)
    if not isinstance(schema, dict):
        return None
    for key, value in schema.items():
        if key not in SCHEMA_KEYWORDS:
            return f"{path}: {key}"
        nested = value.values() if key in ("properties", "$defs", "definitions") and isinstance(value, dict) else [value]
        if key in ("properties", "$defs", "definitions", "items", "prefixItems", "anyOf", "oneOf", "allOf",
                   "additionalProperties"):  # fmt: skip
            for index, item in enumerate(nested):
                found = unsupported_schema_keyword(item, f"{path}.{key}")
                if found:
                    return found
    return None


def json_schema_grammar(schema: str) -> str:
    """The GBNF grammar of a JSON schema (llama-cpp-python's converter); a keyword it would not enforce,
    or a construct it cannot express, is a ValueError naming it."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        parsed = json.loads(schema)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the schema is not JSON: {exc}") from None
    found = unsupported_schema_keyword(parsed)
    if found:
        raise ValueError(f"{found} cannot be enforced by the grammar; remove it or use the supported keywords "
                         f"({', '.join(sorted(SCHEMA_KEYWORDS))})")  # fmt: skip
    try:
        return json_schema_to_gbnf(schema)
    except (AssertionError, KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"the grammar converter cannot express this schema: {exc}") from None


def sampler_chain(model: NativeModel, *, temperature: float, top_p: float, top_k: int, repetition_penalty: float, seed: int,
                  grammar: str | None = None, ignore_eos: bool = False):  # fmt: skip
    """A llama.cpp sampler chain: repetition penalty, a grammar, then greedy or top-k / top-p / temperature / draw."""
    lib = model.lib
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    if repetition_penalty != 1.0:
        penalties = lib.llama_sampler_init_penalties(model.n_vocab, PENALTY_WINDOW, repetition_penalty, 0.0, 0.0)
        lib.llama_sampler_chain_add(chain, penalties)
    if ignore_eos:
        ends = model.end_tokens
        biases = (lib.llama_logit_bias * len(ends))(*((int(t), float("-inf")) for t in ends))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_logit_bias(model.n_vocab, len(ends), biases))
    if grammar is not None:
        constrained = lib.llama_sampler_init_grammar(model.vocab, grammar.encode("utf-8"), b"root")
        if not constrained:
            lib.llama_sampler_free(chain)
            raise ValueError("llama.cpp could not parse the grammar made from the JSON schema")
        lib.llama_sampler_chain_add(chain, constrained)
    if temperature <= 0.0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        return chain
    if top_k > 0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(top_k))
    if top_p < 1.0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(top_p, 1))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(temperature))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
    return chain


def open_llama(path: Path, n_ctx: int, threads: int | None = None):
    """A llama-cpp-python ``Llama`` (its chat and grammar helpers) for ``path``, all cores, logs routed."""
    check_gguf_file(path)
    lib = import_llama_cpp()
    try:
        return lib.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads or default_threads(),
                         n_threads_batch=threads or default_threads(), verbose=False)  # fmt: skip
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(
            f"llama.cpp could not load {path} ({exc}). The file may be truncated or corrupt, or its architecture "
            "too new for this llama-cpp-python: re-download it or upgrade llama-cpp-python."
        ) from exc
