"""What a plan needs to know of a model, taken from its GGUF header: the bytes of each layer (its
experts apart), of the embeddings and of the output, and the attention shape that sizes the KV cache."""

from __future__ import annotations

import re
from dataclasses import dataclass

import gguf

from untuned.errors import ModelLoadError
from untuned.placement.header import GgufHeader, TensorInfo

_LAYER = re.compile(r"^blk\.(\d+)\.")
EXPERTS = re.compile(r"_(?:ch)?exps\b")  # a MoE layer's expert weights (ffn_up_exps, ffn_gate_exps, ffn_down_exps)
# the layout of MoE files converted before llama.cpp merged each layer's experts into one tensor (b3990 and
# later refuse it): one tensor per expert, blk.N.ffn_gate.E.weight
PER_EXPERT = re.compile(r"^blk\.\d+\.ffn_(?:gate|up|down)\.\d+\.weight$")
# architectures whose sliding-window layers llama.cpp keeps at window + batch cells: which layers those are
SWA_LAYERS = {
    "gemma2": lambda layer: layer % 2 == 0,
    "gemma3": lambda layer: layer % 6 != 5,
    "gemma3n": lambda layer: layer % 5 != 4,
}
KV_BYTES = {  # bytes per element of the KV cache's types (quantized: a block's bytes over its elements)
    name: gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]][1] / gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]][0]
    for name, kind in (("f16", "F16"), ("q8_0", "Q8_0"), ("q4_0", "Q4_0"))
}


@dataclass(frozen=True)
class ModelFacts:
    """A model's sizes as a plan uses them (bytes; per layer, in layer order)."""

    name: str
    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: tuple[int, ...]  # per layer
    key_length: int
    value_length: int
    n_vocab: int
    n_ctx_train: int
    n_expert: int
    n_expert_used: int
    sliding_window: int  # 0: none
    swa: tuple[bool, ...]  # per layer: kept at the window's cells
    layer_bytes: tuple[int, ...]  # each layer's weights, its experts apart
    expert_bytes: tuple[int, ...]  # each layer's expert weights (0 for a dense model)
    input_bytes: int  # token embeddings: llama.cpp keeps them in RAM
    output_bytes: int  # output norm and head
    file_bytes: int
    tied_head: bool = False  # the head is the token embeddings: llama.cpp copies them to a GPU holding the head
    per_expert: bool = False  # one tensor per expert: the pre-b3990 layout llama.cpp no longer loads
    n_ff: int = 0  # the feed-forward width (of one expert, for a MoE model)
    qk_norm: bool = False  # Q and K normalised per head (gemma 3): two more query-sized activations

    @property
    def weight_bytes(self) -> int:
        return sum(self.layer_bytes) + sum(self.expert_bytes) + self.input_bytes + self.output_bytes

    @property
    def head_on_gpu_bytes(self) -> int:
        return self.output_bytes + (self.input_bytes if self.tied_head else 0)

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 1

    def layout_problem(self) -> str | None:
        """Why llama.cpp would refuse this file's tensor layout, in words with what to do; None if it loads."""
        if not self.per_expert:
            return None
        return (
            f"{self.name} stores one tensor per expert (blk.N.ffn_gate.E.weight), the layout of MoE conversions made "
            "before llama.cpp release b3990 (late 2024); this llama.cpp refuses it (\"tensor 'blk.0.ffn_down_exps.weight' "
            'not found"). Download a conversion made since, whose experts are merged (blk.N.ffn_gate_exps.weight), '
            "or convert the original weights again with a current convert_hf_to_gguf.py"
        )

    def kv_bytes_per_cell(self, layer: int, kv_type: str) -> float:
        """Bytes of one KV cell (one token of one sequence) of ``layer``: its K and V rows."""
        return self.n_head_kv[layer] * (self.key_length + self.value_length) * KV_BYTES[kv_type]


def facts_of(header: GgufHeader, name: str) -> ModelFacts:
    """The facts of the model whose header this is; a header missing what a plan needs is an error naming it."""
    n_layer = _required(header, "block_count")
    n_head = _required(header, "attention.head_count")
    n_embd = _required(header, "embedding_length")
    kv_heads = header.value("attention.head_count_kv", n_head)
    kv_heads = tuple(kv_heads) if isinstance(kv_heads, list) else (int(kv_heads),) * n_layer
    layers, experts = [0] * n_layer, [0] * n_layer
    input_bytes = output_bytes = 0
    has_output = any(t.name == "output.weight" for t in header.tensors)
    for tensor in header.tensors:
        match = _LAYER.match(tensor.name)
        if match and int(match.group(1)) < n_layer:
            expert = EXPERTS.search(tensor.name) or PER_EXPERT.match(tensor.name)
            (experts if expert else layers)[int(match.group(1))] += tensor.nbytes
        elif tensor.name.startswith("token_embd."):
            input_bytes += tensor.nbytes
        elif not match:
            output_bytes += tensor.nbytes
    vocab = header.metadata.get("tokenizer.ggml.tokens") or header.value("vocab_size", 0)
    window = int(header.value("attention.sliding_window", 0) or 0)
    pattern = SWA_LAYERS.get(header.architecture)
    return ModelFacts(
        name=name,
        architecture=header.architecture,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=kv_heads,
        key_length=int(header.value("attention.key_length", n_embd // n_head)),
        value_length=int(header.value("attention.value_length", n_embd // n_head)),
        n_vocab=int(vocab),
        n_ctx_train=int(header.value("context_length", 0)),
        n_expert=int(header.value("expert_count", 0)),
        n_expert_used=int(header.value("expert_used_count", 0)),
        sliding_window=window if pattern else 0,
        swa=tuple(bool(window and pattern and pattern(i)) for i in range(n_layer)),
        layer_bytes=tuple(layers),
        expert_bytes=tuple(experts),
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        file_bytes=header.file_bytes or header.data_offset + sum(t.nbytes for t in header.tensors),
        tied_head=not has_output,
        per_expert=any(PER_EXPERT.match(t.name) for t in header.tensors),
        n_ff=_feed_forward(header),
        qk_norm=any(t.name.endswith("attn_q_norm.weight") for t in header.tensors),
    )


def _feed_forward(header: GgufHeader) -> int:
    """The feed-forward width: an expert's where the header names it, else the (largest) layer's."""
    width = header.value("expert_feed_forward_length") or header.value("feed_forward_length", 0)
    return int(max(width) if isinstance(width, list) else width or 0)


def _required(header: GgufHeader, key: str) -> int:
    value = header.value(key)
    if value is None:
        raise ModelLoadError(f"the GGUF header has no {header.architecture}.{key}: untuned cannot plan for this model")
    return int(value)


def tensor(name: str, shape: tuple[int, ...], kind: str) -> TensorInfo:
    """A row of a tensor table (for tables written out from a model's published shapes)."""
    return TensorInfo(name, shape, kind)
