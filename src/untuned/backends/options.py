"""How a model is loaded: :class:`LoadOptions`, every setting a user may give, each declared once (its type,
default, bounds and description; the command line, experiments and ``untuned plan`` read these declarations),
and the subsets the built-in backends take (:data:`LLAMA_CPP_OPTIONS`, :data:`TRANSFORMERS_OPTIONS`,
:data:`REMOTE_OPTIONS`). A setting a backend does not use, given a value, is refused with its name
(:meth:`LoadOptions.narrow`); a plugin backend declares its own settings in an Options record
(:meth:`LoadOptions.own`)."""

from __future__ import annotations

import json
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from untuned.errors import UntunedError
from untuned.placement.fit import DEFAULT_MAX_CTX  # declared where the placement reads it

Dtype = Literal["auto", "bfloat16", "float16", "float32"]
KvType = Literal["f16", "q8_0", "q4_0"]
FlashAttention = Literal["auto", "on", "off"]

Narrowed = TypeVar("Narrowed", bound=BaseModel)


class LoadOptions(BaseModel):
    """How to load a model; every field has a sensible default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str | None = Field(None, description="llama.cpp, transformers, remote or a plugin's (default: from the model spec).")
    n_ctx: int | None = Field(
        None, ge=64, description=f"Context window of each sequence, in tokens (default: the model's, at most {DEFAULT_MAX_CTX})."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads (llama.cpp); None = all cores.")
    device: str = Field("auto", description="transformers backend: cpu, cuda, cuda:N or auto.")
    dtype: Dtype = Field(
        "auto", description="transformers backend: the weights' type; auto = bfloat16 on a GPU, float32 on a CPU."
    )
    gpu_layers: Annotated[int, Field(ge=-1)] | Literal["auto"] = Field(
        "auto",
        description="llama.cpp: layers offloaded to the GPU (-1 = all, 0 = none; auto = as many as `untuned plan` "
        "fits in the GPU's free memory, 0 on a CPU-only build); N needs llama-cpp-python built for a GPU (make run GPU=cuda).",
    )
    cpu_moe: Annotated[int, Field(ge=-1)] | Literal["auto"] = Field(
        "auto",
        description="llama.cpp, MoE models: keep the expert weights of the first N layers in RAM while those layers run "
        "on the GPU (-1 = every layer's; auto = as planned with --gpu-layers auto, else 0).",
    )
    parallel: int = Field(1, ge=1, le=64, description="Requests a local model decodes together in one batch.")
    batch_invariant: bool = Field(
        False,
        description="llama.cpp: decode at most EXACT_ROWS requests per step, the "
        "batch size whose kernels give each request exactly its answer alone, so that answers "
        "do not depend on how many are decoded at once (batch runs: the default of generate).",
    )
    kv_budget: int | None = Field(
        None,
        ge=256,
        description="llama.cpp: KV cache cells shared on demand by all "
        "requests (one pool); None: each slot its own stream of the whole window (exact).",
    )
    kv_type: KvType = Field(
        "f16",
        description="llama.cpp: the KV cache's number type; q8_0 takes about half the memory of f16, q4_0 about "
        "a quarter (both need flash attention).",
    )
    flash_attn: FlashAttention = Field(
        "auto",
        description="llama.cpp: flash attention; auto = on when the KV cache is quantized (llama.cpp needs it "
        "there), off with f16 (the path whose batch invariance is tested).",
    )
    draft: str | None = Field(
        None,
        description="llama.cpp: speculative decoding of greedy answers (the same answers, sooner): 'prompt-lookup' "
        "guesses from the prompt and answer so far; a GGUF model (a path, hf:org/repo:QUANT, default) with the "
        "same tokenizer guesses as a draft, e.g. TinyLlama-1.1B for Llama-2-70B. None: off.",
    )
    prefix_cache: bool = Field(
        True,
        description="llama.cpp: save evaluated prompt prefixes to disk ($UNTUNED_CACHE_DIR or ~/.cache/untuned/prefixes) "
        "and load them instead of evaluating them again (after a restart, in another process); checked before use.",
    )
    prefix_cache_gib: float = Field(
        4.0, ge=0, description="llama.cpp: the most GiB the prefix cache holds (least recently used dropped)."
    )
    remote_model: str | None = Field(None, description="Model name on a remote server (default: its first).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the remote server's API key.")
    concurrency: int = Field(4, ge=1, description="Most requests in flight at once (remote).")
    timeout: float = Field(120.0, gt=0, description="Seconds before a remote request times out.")
    max_retries: int = Field(4, ge=0, description="Retries on 429, 5xx and timeouts (remote), with backoff.")
    backend_options: tuple[tuple[str, str | int | float | bool], ...] = Field(
        (),
        description="A plugin backend's own settings, NAME=VALUE (repeatable), declared and checked by its Options "
        "record (see docs/architecture.md, 'Adding a backend'); the built-in backends take none.",
    )

    @field_validator("backend_options", mode="before")
    @classmethod
    def _pairs(cls, value):
        """A mapping (a plan's table), NAME=VALUE strings (the command line; VALUE read as JSON where it is JSON,
        else as text) or pairs."""
        if isinstance(value, dict):
            return tuple(value.items())
        pairs = []
        for entry in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(entry, str):
                name, sep, text = entry.partition("=")
                if not sep or not name:
                    raise ValueError(f"backend option {entry!r} is not NAME=VALUE")
                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = text
                entry = (name, parsed if isinstance(parsed, (str, int, float, bool)) else text)
            pairs.append(entry)
        return tuple(pairs)

    def own(self, record: type[Narrowed], backend: str) -> Narrowed:
        """A plugin backend's own settings (``backend_options``) as its ``record`` declares them: a name it does
        not declare, or a bad value, is refused with the name and what it takes."""
        given = dict(self.backend_options)
        unknown = [name for name in given if name not in record.model_fields]
        if unknown:
            raise UntunedError(
                f"the {backend} backend has no setting {', '.join(map(repr, unknown))} (--backend-option); its own "
                f"settings are {', '.join(record.model_fields) or 'none'}."
            )
        try:
            return record(**given)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise UntunedError(
                f"the {backend} backend's setting {first['loc'][0]!r} (--backend-option): {first['msg']}"
            ) from None

    def narrow(self, accepted: type[Narrowed], backend: str) -> Narrowed:
        """These options as ``accepted``, the settings one backend takes. A setting it does not take that
        was given a value other than its default is refused with an error naming it, never ignored."""
        unused = [
            name
            for name, info in type(self).model_fields.items()
            if name != "backend" and name not in accepted.model_fields and getattr(self, name) != info.default
        ]
        if unused:
            flag = {"backend_options": "backend-option"}
            named = ", ".join(f"{name} (--{flag.get(name, name.replace('_', '-'))})" for name in unused)
            raise UntunedError(
                f"the {backend} backend does not use {named}; its settings are {', '.join(accepted.model_fields)}."
            )
        return accepted(**{name: getattr(self, name) for name in accepted.model_fields})


def _subset(name: str, *fields: str) -> type[BaseModel]:
    """A record of some of :class:`LoadOptions`' fields, with their types, defaults and checks."""
    chosen = {field: (LoadOptions.model_fields[field].annotation, LoadOptions.model_fields[field]) for field in fields}
    return create_model(name, __config__=ConfigDict(extra="forbid", frozen=True), **chosen)  # type: ignore[call-overload]


LLAMA_CPP_OPTIONS = _subset(
    "LlamaCppOptions",
    "n_ctx",
    "threads",
    "gpu_layers",
    "cpu_moe",
    "parallel",
    "batch_invariant",
    "kv_budget",
    "kv_type",
    "flash_attn",
    "draft",
    "prefix_cache",
    "prefix_cache_gib",
)
TRANSFORMERS_OPTIONS = _subset("TransformersOptions", "n_ctx", "device", "dtype", "parallel")
REMOTE_OPTIONS = _subset("RemoteOptions", "remote_model", "api_key_env", "concurrency", "timeout", "max_retries", "parallel")
