"""Hugging Face transformers backend (optional extra ``untuned[hf]``): hub ids, local folders, GGUF files,
on CPU or CUDA, with batched generation over a shared prefix (:mod:`.engine`)."""

from untuned.backends.hf.backend import TransformersBackend

__all__ = ["TransformersBackend"]
