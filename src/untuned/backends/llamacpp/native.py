"""Thin wrappers over llama.cpp's C API (through llama-cpp-python's ctypes bindings).

Only what the engine needs: a model and its vocabulary, a context whose KV cache keeps one
stream of cells per sequence, a reusable batch with numpy views on its arrays, and sampler
chains. Native log lines go to Python logging instead of stderr.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path

import numpy as np

from untuned.errors import BackendUnavailableError, InvalidInput, ModelLoadError, ModelNotFoundError

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

    def __init__(self, path: Path, *, gpu_layers: int = 0, overrides=None) -> None:
        """``overrides``: tensors kept in RAM whatever their layer's device (a :class:`~untuned.backends.llamacpp.
        devices.CpuOverrides`, llama.cpp's tensor buffer-type overrides; a MoE model's experts)."""
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
        self._overrides = overrides  # kept alive with the model
        if overrides is not None:
            params.tensor_buft_overrides = overrides.pointer
        self.model = lib.llama_model_load_from_file(str(path).encode("utf-8"), params)
        if not self.model:
            raise ModelLoadError(
                f"llama.cpp could not load {path}. The file may be truncated or corrupt, or its architecture "
                "too new for this llama-cpp-python: re-download it or upgrade llama-cpp-python."
            )
        self.path = path
        self.build = f"{lib.__version__} {lib.llama_print_system_info().decode(errors='replace')}"
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

    def check_ids(self, ids, what: str) -> None:
        """ValueError naming the first id of ``ids`` outside the vocabulary: llama.cpp would abort the whole
        process on it (an uncaught C++ exception), so no id reaches it unchecked."""
        n_vocab = self.n_vocab
        for index, token in enumerate(ids):
            if not 0 <= token < n_vocab:
                raise InvalidInput(f"{what}: token id {token} at position {index} is outside the vocabulary (0-{n_vocab - 1})")

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as nothing). Cached."""
        found = self._pieces.get(token)
        if found is None:
            if not 0 <= token < self.n_vocab:
                raise InvalidInput(f"token id {token} is outside the vocabulary (0-{self.n_vocab - 1})")
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


KV_TYPES = {
    "f16": lambda lib: lib.GGML_TYPE_F16,
    "q8_0": lambda lib: lib.GGML_TYPE_Q8_0,
    "q4_0": lambda lib: lib.GGML_TYPE_Q4_0,
}


def attention_choice(kv_type: str, flash_attn: str) -> bool:
    """Whether flash attention is on for this KV type and ``--flash-attn`` setting. ``auto``: on for a
    quantized cache (llama.cpp cannot read a quantized V cache without it), off for f16, the path whose
    exactness the engine's tests hold. A quantized cache with flash attention off is refused here,
    before llama.cpp fails to make the context."""
    if kv_type not in KV_TYPES:
        raise InvalidInput(f"KV type {kv_type!r} is not one of {', '.join(KV_TYPES)}")
    if flash_attn not in ("auto", "on", "off"):
        raise InvalidInput(f"flash attention {flash_attn!r} is not one of auto, on, off")
    if flash_attn == "off" and kv_type != "f16":
        raise ModelLoadError(
            f"--kv-type {kv_type} needs flash attention (llama.cpp reads a quantized V cache only there): "
            "leave --flash-attn at auto or set it on, or use --kv-type f16."
        )
    return flash_attn == "on" or (flash_attn == "auto" and kv_type != "f16")


def resident_bytes() -> int:
    """This process's resident memory (Linux; 0 where /proc is not there)."""
    try:
        pages = int(open("/proc/self/statm").read().split()[1])
    except OSError:
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


class FedSequence:
    """The tokens one sequence of a context holds in its cells, in order: what a caller that keeps cells from call
    to call (a draft model, a scoring session) compares its next ids with, and trims back to."""

    def __init__(self, ctx: Context, seq: int) -> None:
        self.ctx, self.seq, self.tokens = ctx, seq, []

    def rewind(self, ids: list[int], most: int, *, align: int = 1, back: bool = True) -> int:
        """Keep the cells of the longest common prefix of the held tokens and ``ids``, at most ``most`` of them,
        rounded down to a multiple of ``align``; ``back=False`` keeps nothing unless nothing is cut. Returns how
        many are kept (where feeding resumes)."""
        keep = min(common_length(self.tokens, ids), most) // align * align
        if keep < len(self.tokens):
            keep = keep if back else 0
            self.ctx.trim(self.seq, keep)
            del self.tokens[keep:]
        return keep

    def feed(self, batch: Batch, tokens: list[int], outputs: np.ndarray | bool) -> None:
        """Decode ``tokens`` after the held ones (``outputs`` flags the rows that give logits)."""
        batch.clear()
        batch.add(tokens, len(self.tokens), self.seq, outputs)
        self.ctx.decode(batch)
        self.tokens.extend(tokens)


def common_length(a: list[int], b: list[int]) -> int:
    """How many tokens ``a`` and ``b`` share from the start."""
    n = min(len(a), len(b))
    if not n:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n


class Context:
    """A llama_context with ``n_seq`` sequences, each in its own KV stream of ``n_ctx_seq`` cells, or
    (``pool``) all in one KV pool of ``pool`` cells that they share on demand."""

    def __init__(
        self,
        model: NativeModel,
        *,
        n_ctx_seq: int,
        n_seq: int,
        n_batch: int,
        threads: int,
        pool: int | None = None,
        kv_type: str = "f16",
        flash_attn: str = "auto",
    ) -> None:
        lib = self.lib = model.lib
        flash = attention_choice(kv_type, flash_attn)
        params = lib.llama_context_default_params()
        params.n_ctx = pool if pool is not None else n_ctx_seq * n_seq
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.n_outputs_max_per_seq = 0
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = pool is not None  # else one stream per sequence: see the engine's docstring
        params.swa_full = False
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.type_k = params.type_v = KV_TYPES[kv_type](lib)
        self.kv_type, self.flash_attn = kv_type, flash
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
        self.n_ctx = lib.llama_n_ctx(self.ctx)  # cells llama.cpp made: n_ctx rounded up to whole blocks of 256
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

    def trim(self, seq: int, start: int) -> None:
        """Forget the cells of ``seq`` from position ``start`` on (guesses the model did not confirm)."""
        self.lib.llama_memory_seq_rm(self.memory, seq, start, -1)

    def state_of(self, seq: int) -> bytes:
        """The KV state of ``seq`` as llama.cpp saves a sequence (its cells in cell order, with positions)."""
        size = self.lib.llama_state_seq_get_size(self.ctx, seq)
        buffer = (ctypes.c_ubyte * size)()
        written = self.lib.llama_state_seq_get_data(self.ctx, buffer, size, seq)
        return bytes(buffer[:written])

    def set_state(self, seq: int, state: bytes) -> bool:
        """Fill the empty ``seq`` with a saved state (its cells laid out from the first free one); False when
        llama.cpp refuses it (``seq`` is then cleared)."""
        buffer = (ctypes.c_ubyte * len(state)).from_buffer_copy(state)
        if self.lib.llama_state_seq_set_data(self.ctx, buffer, len(state), seq) == len(state):
            return True
        self.clear(seq)
        return False

    def clone(self, source: int, target: int) -> None:
        """Make ``target`` a copy of ``source``: its cells, their layout and their data."""
        self.lib.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_free(self.ctx)
            self.ctx = None
