"""Tensor tables of two desktop-sized models written out from their published shapes (config.json of
meta-llama/Llama-2-70b-hf and mistralai/Mixtral-8x7B-v0.1), with each tensor's type as llama.cpp's
Q4_K_M recipe assigns it: no weights, only the table a GGUF header carries."""

from __future__ import annotations

from untuned.plan.header import GgufHeader, TensorInfo


def more_bits(layer: int, layers: int) -> bool:
    """The layers Q4_K_M gives more bits (the first and last eighth, every third in between)."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def _ends(embd: int, tensors: list[TensorInfo]) -> list[TensorInfo]:
    """The embeddings before the layers, the output norm and head (Q6_K, as Q4_K_M has it) after them."""
    head = [TensorInfo("output_norm.weight", (embd,), "F32"), TensorInfo("output.weight", (embd, 32000), "Q6_K")]
    return [TensorInfo("token_embd.weight", (embd, 32000), "Q4_K"), *tensors, *head]


def _header(arch: str, metadata: dict, tensors: list[TensorInfo]) -> GgufHeader:
    meta = {"general.architecture": arch, **{f"{arch}.{k}": v for k, v in metadata.items()}}
    meta["tokenizer.ggml.tokens"] = 32000
    return GgufHeader(meta, tuple(tensors), data_offset=0)


def _attention(b: str, embd: int, kv: int, *, k: str, v: str, output: str) -> list[TensorInfo]:
    """A block's attention tensors and its two norms (Q always Q4_K in a Q4_K_M file)."""
    return [
        TensorInfo(b + "attn_norm.weight", (embd,), "F32"),
        TensorInfo(b + "attn_q.weight", (embd, embd), "Q4_K"),
        TensorInfo(b + "attn_k.weight", (embd, kv), k),
        TensorInfo(b + "attn_v.weight", (embd, kv), v),
        TensorInfo(b + "attn_output.weight", (embd, embd), output),
        TensorInfo(b + "ffn_norm.weight", (embd,), "F32"),
    ]


def llama2_70b_q4_k_m() -> GgufHeader:
    n, embd, ff, kv = 80, 8192, 28672, 1024
    tensors = []
    for i in range(n):
        b = f"blk.{i}."
        # a 70B's V is shared by 8 heads: Q4_K raised to Q5_K, Q6_K where more bits go
        tensors += _attention(b, embd, kv, k="Q4_K", v="Q6_K" if more_bits(i, n) else "Q5_K", output="Q4_K")
        tensors += [
            TensorInfo(b + "ffn_gate.weight", (embd, ff), "Q4_K"),
            TensorInfo(b + "ffn_up.weight", (embd, ff), "Q4_K"),
            TensorInfo(b + "ffn_down.weight", (ff, embd), "Q6_K" if more_bits(i, n) else "Q4_K"),
        ]
    meta = {
        "block_count": n,
        "embedding_length": embd,
        "feed_forward_length": ff,
        "attention.head_count": 64,
        "attention.head_count_kv": 8,
        "context_length": 4096,
    }
    return _header("llama", meta, _ends(embd, tensors))


def mixtral_8x7b_q4_k_m(*, recipe: str = "2023-12") -> GgufHeader:
    """Mixtral's table as TheBloke's Q4_K_M file of December 2023 has it: made with the llama.cpp of then,
    before its MoE rules gave the experts' ffn_down Q6_K on half the layers and attn_output Q5_K. Its
    published size (26.44 GB) is matched by exactly that table; ``recipe="current"`` is today's recipe
    (28.45 GB), the size of a Q4_K_M made now."""
    n, embd, ff, kv, experts = 32, 4096, 14336, 1024, 8
    current = recipe == "current"
    tensors = []
    for i in range(n):
        b = f"blk.{i}."
        # 8 experts: K and V at Q8_0
        tensors += _attention(b, embd, kv, k="Q8_0", v="Q8_0", output="Q5_K" if current else "Q4_K")
        tensors += [
            TensorInfo(b + "ffn_gate_inp.weight", (embd, experts), "F32"),
            TensorInfo(b + "ffn_gate_exps.weight", (embd, ff, experts), "Q4_K"),
            TensorInfo(b + "ffn_up_exps.weight", (embd, ff, experts), "Q4_K"),
            TensorInfo(b + "ffn_down_exps.weight", (ff, embd, experts), "Q6_K" if current and more_bits(i, n) else "Q4_K"),
        ]
    meta = {
        "block_count": n,
        "embedding_length": embd,
        "feed_forward_length": ff,
        "attention.head_count": 32,
        "attention.head_count_kv": 8,
        "expert_count": experts,
        "expert_used_count": 2,
        "context_length": 32768,
    }
    return _header("llama", meta, _ends(embd, tensors))
