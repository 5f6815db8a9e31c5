"""llama.cpp backend (llama-cpp-python, GGUF files): the default. See :mod:`.engine` for how
requests are batched and why their answers never depend on what the cache held before."""

from untuned.backends.llamacpp.backend import LlamaCppBackend
from untuned.backends.llamacpp.engine import LlamaEngine
from untuned.backends.llamacpp.native import check_gguf_file
from untuned.backends.protocol import EngineStats

__all__ = ["EngineStats", "LlamaEngine", "LlamaCppBackend", "check_gguf_file"]
