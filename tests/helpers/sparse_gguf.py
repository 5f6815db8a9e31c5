"""Sparse GGUF files and llama.cpp's own accounting of them.

:func:`write_sparse` writes a tensor table (tests/helpers/gguf_tables.py) as a GGUF file llama.cpp loads:
the header with a tokenizer of the right size, the data a hole (a 41 GB file takes a few MB of disk).
:func:`llama_cpp_accounting` loads it with ``no_alloc`` (metadata only, allocations simulated; no weights
read) and makes a context with the given settings: what llama.cpp says it would allocate for the KV cache
and the compute buffer is the oracle the planner is held to.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from untuned.placement.header import GgufHeader

MiB = 1 << 20


def write_sparse(header: GgufHeader, path: Path, *, extra: dict | None = None) -> Path:
    """``header`` as a GGUF file at ``path`` whose tensor data is a hole; ``extra``: more metadata (typed)."""
    arch = header.metadata["general.architecture"]
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in header.metadata.items():
        if key in ("general.architecture", "tokenizer.ggml.tokens"):
            continue
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_string(key, str(value))
    for key, value in (extra or {}).items():
        writer.add_float32(key, value) if isinstance(value, float) else writer.add_uint32(key, value)
    _tokenizer(writer, int(header.metadata["tokenizer.ggml.tokens"]))
    for tensor in header.tensors:
        kind = gguf.GGMLQuantizationType[tensor.type]
        shape = list(reversed(tensor.shape))  # numpy order, outermost first
        if kind in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            dtype = np.float32 if kind == gguf.GGMLQuantizationType.F32 else np.float16
        else:  # quantized: the innermost dimension in bytes, as the writer takes it
            block, size = gguf.GGML_QUANT_SIZES[kind]
            shape[-1] = shape[-1] // block * size
            dtype = np.uint8
        writer.add_tensor_info(tensor.name, shape, dtype, tensor.nbytes, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with path.open("r+b") as handle:  # the data: a hole as long as every tensor, aligned as the writer laid them
        handle.truncate(-(-path.stat().st_size // 32) * 32 + sum(-(-t.nbytes // 32) * 32 for t in header.tensors))
    return path


def _tokenizer(writer: gguf.GGUFWriter, size: int) -> None:
    """A SentencePiece-style vocabulary of ``size`` tokens: unknown, BOS, EOS, 256 bytes, then plain pieces."""
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))]
    tokens += [f"\u2581t{i}" for i in range(size - len(tokens))]
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * size)
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * (size - 259))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)


@dataclass(frozen=True)
class Accounting:
    """What llama.cpp says a context needs (MiB), read from its own log lines."""

    kv: float
    compute: float


_LINES: list[str] = []


def llama_cpp_accounting(
    path: Path, *, n_ctx: int, n_seq: int, flash_attn: bool, kv_type: str = "f16", unified: bool = False
) -> Accounting:
    """llama.cpp's KV and compute figures for a context over ``path`` loaded with ``no_alloc``."""
    import llama_cpp as lib

    from untuned.backends.llamacpp.native import KV_TYPES, import_llama_cpp

    import_llama_cpp()  # its log callback, replaced here for the duration and put back after
    callback = lib.llama_log_callback(lambda level, text, data: _LINES.append(text.decode("utf-8", "replace")))
    lib.llama_log_set(callback, ctypes.c_void_p(0))
    params = lib.llama_model_default_params()
    params.no_alloc, params.load_mode, params.use_extra_bufts = True, lib.LLAMA_LOAD_MODE_NONE, False
    model = lib.llama_model_load_from_file(str(path).encode(), params)
    assert model, f"llama.cpp could not read {path}: {''.join(_LINES)[-2000:]}"
    try:
        _LINES.clear()
        context = lib.llama_context_default_params()
        context.n_ctx, context.n_seq_max, context.n_batch, context.n_ubatch = n_ctx, n_seq, 512, 512
        context.flash_attn_type = 1 if flash_attn else 0
        context.type_k = context.type_v = KV_TYPES[kv_type](lib)
        context.kv_unified = unified
        context.swa_full = False  # as the engine makes its contexts (native.Context)
        ctx = lib.llama_init_from_model(model, context)
        text = "".join(_LINES)
        assert ctx, text[-2000:]
        lib.llama_free(ctx)
    finally:
        lib.llama_model_free(model)
        from untuned.backends.llamacpp import native

        native._LOG_CALLBACK = None
        native._route_native_logs(lib)
    kv = sum(float(m) for m in re.findall(r"llama_kv_cache: size =\s*([\d.]+) MiB", text))
    compute = sum(float(m) for m in re.findall(r"\w+ compute buffer size =\s*([\d.]+) MiB", text))
    return Accounting(kv, compute)
