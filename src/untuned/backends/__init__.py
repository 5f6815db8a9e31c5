"""Backends: the Protocol a model implementation follows, its records, the registry, and the
built-in implementations (``llamacpp``, ``hf``, ``remote``), each imported only when used."""

from untuned.backends.protocol import (
    DEFAULT_MAX_CTX,
    Backend,
    Batched,
    BatchScoring,
    ChatTemplated,
    EngineStats,
    FinishReason,
    LoadOptions,
    MemoryReporting,
    Sampling,
    SchemaConstrained,
    StreamChunk,
    TokenLogprob,
    TokenPieces,
    TokenScores,
)
from untuned.backends.registry import (
    ModelSpec,
    backend_factory,
    backend_names,
    default_gguf_path,
    load_backend,
    plugin_backend_names,
)
from untuned.backends.scoring import RowScoring, check_score_request, log_softmax, scores_from_logits, top_k_indices

__all__ = [
    "DEFAULT_MAX_CTX",
    "Backend",
    "BatchScoring",
    "Batched",
    "ChatTemplated",
    "EngineStats",
    "MemoryReporting",
    "SchemaConstrained",
    "TokenPieces",
    "FinishReason",
    "LoadOptions",
    "ModelSpec",
    "RowScoring",
    "Sampling",
    "StreamChunk",
    "TokenLogprob",
    "TokenScores",
    "backend_factory",
    "backend_names",
    "check_score_request",
    "default_gguf_path",
    "load_backend",
    "log_softmax",
    "plugin_backend_names",
    "scores_from_logits",
    "top_k_indices",
]
