"""Tensor tables of two desktop-sized models written out from their published shapes (config.json of
meta-llama/Llama-2-70b-hf and mistralai/Mixtral-8x7B-v0.1), with each tensor's type as llama.cpp's
Q4_K_M recipe assigns it: no weights, only the table a GGUF header carries."""

from __future__ import annotations

from untuned.placement.header import GgufHeader, TensorInfo


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
    # a 70B's V is shared by 8 heads: Q4_K raised to Q5_K, Q6_K where more bits go
    return _dense_llama(80, 8192, 28672, 64, 8, 4096, v="Q5_K")


def _dense_llama(n: int, embd: int, ff: int, heads: int, kv_heads: int, context: int, *, v: str) -> GgufHeader:
    """A dense Llama-2-style model at Q4_K_M: V and down at ``v`` / Q4_K, Q6_K in the layers given more bits."""
    kv = kv_heads * embd // heads
    tensors = []
    for i in range(n):
        b = f"blk.{i}."
        tensors += _attention(b, embd, kv, k="Q4_K", v="Q6_K" if more_bits(i, n) else v, output="Q4_K")
        tensors += _dense_ffn(b, embd, ff, "Q6_K" if more_bits(i, n) else "Q4_K")
    return _header("llama", _shape(n, embd, ff, heads, kv_heads, context), _ends(embd, tensors))


def _dense_ffn(b: str, embd: int, ff: int, down: str) -> list[TensorInfo]:
    """A block's gate, up (Q4_K) and down projections."""
    return [
        TensorInfo(b + "ffn_gate.weight", (embd, ff), "Q4_K"),
        TensorInfo(b + "ffn_up.weight", (embd, ff), "Q4_K"),
        TensorInfo(b + "ffn_down.weight", (ff, embd), down),
    ]


def _shape(n: int, embd: int, ff: int, heads: int, kv_heads: int, context: int, **more) -> dict:
    """A model's shape as its GGUF metadata says it (keys without the architecture's prefix)."""
    return {
        "block_count": n,
        "embedding_length": embd,
        "feed_forward_length": ff,
        "attention.head_count": heads,
        "attention.head_count_kv": kv_heads,
        "context_length": context,
        **more,
    }


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


def _k_fallback(kind: str, columns: int) -> str:
    """llama.cpp's fallback where a row is not whole 256-element blocks (Qwen2.5-72B's 29,568-wide FFN)."""
    return kind if columns % 256 == 0 else {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}.get(kind, kind)


def llama3_70b_q4_k_m() -> GgufHeader:
    """meta-llama/Meta-Llama-3-70B: Llama-2-70B's shape with a 128,256-token vocabulary and an 8,192 window."""
    header = llama2_70b_q4_k_m()
    embd, vocab = 8192, 128256
    tensors = [
        TensorInfo(t.name, (embd, vocab), t.type) if t.name in ("token_embd.weight", "output.weight") else t
        for t in header.tensors
    ]
    meta = {**header.metadata, "llama.context_length": 8192, "llama.rope.freq_base": 500000.0, "tokenizer.ggml.tokens": vocab}
    return GgufHeader(meta, tuple(tensors), data_offset=0)


def qwen25_72b_q4_k_m() -> GgufHeader:
    """Qwen/Qwen2.5-72B: 80 layers of 8,192, FFN 29,568, 64 heads over 8 KV heads, biases on Q, K and V, a
    152,064-token vocabulary."""
    n, embd, ff, kv, vocab = 80, 8192, 29568, 1024, 152064
    tensors = [TensorInfo("token_embd.weight", (embd, vocab), "Q4_K")]
    for i in range(n):
        b = f"blk.{i}."
        tensors += _attention(b, embd, kv, k="Q4_K", v="Q6_K" if more_bits(i, n) else "Q5_K", output="Q4_K")
        tensors += [TensorInfo(b + f"attn_{x}.bias", (embd if x == "q" else kv,), "F32") for x in "qkv"]
        tensors += _dense_ffn(b, embd, ff, _k_fallback("Q6_K" if more_bits(i, n) else "Q4_K", ff))
    tensors += [TensorInfo("output_norm.weight", (embd,), "F32"), TensorInfo("output.weight", (embd, vocab), "Q6_K")]
    meta = _shape(n, embd, ff, 64, 8, 32768, **{"attention.layer_norm_rms_epsilon": 1e-6, "rope.freq_base": 1000000.0})
    header = _header("qwen2", meta, tensors)
    return GgufHeader({**header.metadata, "tokenizer.ggml.tokens": vocab}, header.tensors, data_offset=0)


def gemma3_27b_q4_k_m() -> GgufHeader:
    """google/gemma-3-27b-pt (text): 62 layers of 5,376, FFN 21,504, 32 heads of 128 over 16 KV heads, five of
    every six layers attending over a 1,024-token window, the output tied to a 262,208-token embedding."""
    n, embd, ff, heads, kv_heads, head, vocab = 62, 5376, 21504, 32, 16, 128, 262208
    tensors = [TensorInfo("token_embd.weight", (embd, vocab), "Q6_K")]
    for i in range(n):
        b = f"blk.{i}."
        tensors += [
            TensorInfo(b + "attn_norm.weight", (embd,), "F32"),
            TensorInfo(b + "attn_q.weight", (embd, heads * head), "Q4_K"),
            TensorInfo(b + "attn_k.weight", (embd, kv_heads * head), "Q4_K"),
            TensorInfo(b + "attn_v.weight", (embd, kv_heads * head), "Q6_K" if more_bits(i, n) else "Q4_K"),
            TensorInfo(b + "attn_output.weight", (heads * head, embd), "Q4_K"),
            TensorInfo(b + "attn_q_norm.weight", (head,), "F32"),
            TensorInfo(b + "attn_k_norm.weight", (head,), "F32"),
            TensorInfo(b + "post_attention_norm.weight", (embd,), "F32"),
            TensorInfo(b + "ffn_norm.weight", (embd,), "F32"),
            TensorInfo(b + "ffn_gate.weight", (embd, ff), "Q4_K"),
            TensorInfo(b + "ffn_up.weight", (embd, ff), "Q4_K"),
            TensorInfo(b + "ffn_down.weight", (ff, embd), "Q6_K" if more_bits(i, n) else "Q4_K"),
            TensorInfo(b + "post_ffw_norm.weight", (embd,), "F32"),
        ]
    tensors.append(TensorInfo("output_norm.weight", (embd,), "F32"))
    meta = {
        "block_count": n,
        "embedding_length": embd,
        "feed_forward_length": ff,
        "attention.head_count": heads,
        "attention.head_count_kv": kv_heads,
        "attention.key_length": head,
        "attention.value_length": head,
        "attention.sliding_window": 1024,
        "attention.layer_norm_rms_epsilon": 1e-6,
        "context_length": 131072,
        "rope.freq_base": 1000000.0,
    }
    header = _header("gemma3", meta, tensors)
    return GgufHeader({**header.metadata, "tokenizer.ggml.tokens": vocab}, header.tensors, data_offset=0)


def mixtral_per_expert_q4_k_m() -> GgufHeader:
    """Mixtral as the December 2023 conversions stored it: one tensor per expert (blk.N.ffn_gate.E.weight)."""
    header = mixtral_8x7b_q4_k_m()
    tensors = []
    for t in header.tensors:
        if "_exps." not in t.name:
            tensors.append(t)
            continue
        *shape, experts = t.shape
        stem = t.name.replace("_exps.weight", "")
        tensors += [TensorInfo(f"{stem}.{e}.weight", tuple(shape), t.type) for e in range(experts)]
    return GgufHeader(header.metadata, tuple(tensors), data_offset=0)


def tinyllama_1b_q4_k_m() -> GgufHeader:
    """TinyLlama-1.1B (TinyLlama/TinyLlama-1.1B-Chat-v1.0's config: Llama-2's tokenizer, 22 layers, 4 KV heads):
    the draft model people pair with Llama-2-70B."""
    return _dense_llama(22, 2048, 5632, 32, 4, 2048, v="Q4_K")
