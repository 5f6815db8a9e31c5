"""Hugging Face transformers backend (optional extra ``untuned[hf]``): hub ids, local folders, GGUF files,
on CPU or CUDA. The URIAL prefix's key-value cache is computed once and laid into each batch of
answers, so only the queries and the answers run through the model."""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from untuned.backends import (
    DEFAULT_MAX_CTX,
    LoadOptions,
    ModelSpec,
    RowScoring,
    Sampling,
    StreamChunk,
    TokenScores,
    check_score_request,
    default_gguf_path,
    scores_from_logits,
)
from untuned.backends.batching import EngineStats
from untuned.backends.hf.engine import TransformersEngine
from untuned.chat_template import with_shared_head
from untuned.conversation import RenderedPrompt
from untuned.errors import (
    BackendUnavailableError,
    ChatTemplateError,
    ContextOverflowError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedOperation,
)

log = logging.getLogger(__name__)
SCORE_CHUNK = 64  # positions per forward step when scoring: 64 x vocab logits at a time


def _import_torch():
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise BackendUnavailableError(
            "the transformers backend needs the optional extra: pip install 'untuned[hf]' (torch and transformers)"
        ) from exc
    return torch, transformers


class TransformersBackend(RowScoring):
    """A causal LM loaded with transformers. Thread-safe; ``slots`` answers share each forward pass
    (see :mod:`untuned.backends.hf.engine`), scoring runs between them."""

    def __init__(
        self,
        source: str | Path,
        *,
        gguf_file: str | None = None,
        device: str = "auto",
        n_ctx: int | None = None,
        name: str | None = None,
        from_hub: bool = False,
        slots: int = 1,
        dtype: str = "auto",
    ) -> None:
        torch, transformers = _import_torch()
        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.dtype = dtype
        dtype = getattr(torch, dtype)
        kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(source), **kwargs)
            model = transformers.AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype, **kwargs)
        except OSError as exc:
            if from_hub:
                raise ModelNotFoundError(
                    f"could not fetch hf:{source} ({str(exc).splitlines()[0]}). Without network access, download the "
                    "model where you can (huggingface-cli download ORG/NAME --local-dir DIR), copy DIR here and pass "
                    "--model DIR."
                ) from exc
            raise ModelLoadError(f"transformers could not load {source}: {str(exc).splitlines()[0]}") from exc
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(f"transformers could not load {source}: {exc}") from exc
        self.model = model.to(self.device).eval()
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.name = name or (Path(str(source)).name if not from_hub else str(source))
        if gguf_file:
            self.name = Path(gguf_file).name
        trained = getattr(model.config, "max_position_embeddings", None) or DEFAULT_MAX_CTX
        self.context_length: int | None = n_ctx or min(int(trained), DEFAULT_MAX_CTX)
        self.eos_ids = self._eos_ids()
        self._prefix_cache: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.max_prefixes = 4
        self.parallel = slots
        self.engine = TransformersEngine(self, slots=slots)

    @classmethod
    def from_spec(cls, spec: ModelSpec, options: LoadOptions) -> TransformersBackend:
        common = {"device": options.device, "n_ctx": options.n_ctx, "slots": options.parallel, "dtype": options.dtype}
        if spec.kind == "default":
            path = default_gguf_path()
            return cls(path.parent, gguf_file=path.name, name="gemma-3-270m-base", **common)
        if spec.kind == "gguf":
            path = Path(spec.location)
            if not path.is_file():
                raise ModelNotFoundError(f"GGUF file not found: {path}.")
            return cls(path.parent, gguf_file=path.name, **common)
        if spec.kind == "folder":
            return cls(spec.location, **common)
        if spec.kind == "hf":
            return cls(spec.location, from_hub=True, **common)
        raise ModelLoadError(f"the transformers backend cannot load {spec.location!r}.")

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id if self.model.generation_config else None
        if ids is None:
            ids = self.tokenizer.eos_token_id
        if ids is None:
            return set()
        return {int(i) for i in ids} if isinstance(ids, (list, tuple)) else {int(ids)}

    # --- tokens ----------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return ([bos] if add_special and bos is not None else []) + list(ids)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True)

    def piece(self, token: int) -> bytes:
        """The bytes of one token, as far as the tokenizer can tell them apart."""
        return self.tokenizer.decode([token], skip_special_tokens=True).encode("utf-8")

    # --- generation --------------------------------------------------------------------------

    def stream(self, prompt: RenderedPrompt, sampling: Sampling) -> Iterator[StreamChunk]:
        if sampling.json_schema is not None:
            raise UnsupportedOperation("the transformers backend cannot hold output to a JSON schema; use a GGUF with llama.cpp")
        if sampling.ignore_eos:
            raise UnsupportedOperation("the transformers backend does not support ignore_eos; use a GGUF with llama.cpp")
        prefix, body = self._split(prompt)
        if not body:
            prefix, body = prefix[:-1], prefix[-1:]
        total = len(prefix) + len(body)
        if self.context_length is not None and total >= self.context_length:
            raise ContextOverflowError(total, self.context_length)
        limit = min(sampling.max_tokens, (self.context_length or 0) - total)
        return self.engine.generate(prefix, body, sampling, limit)

    def _split(self, prompt: RenderedPrompt) -> tuple[list[int], list[int]]:
        """The prompt's token ids: the cacheable prefix and the body."""
        if prompt.ids is not None:
            return [], list(prompt.ids)
        if prompt.special_tokens:
            prefix = list(self.tokenizer(prompt.prefix, add_special_tokens=False)["input_ids"]) if prompt.prefix else []
            return prefix, list(self.tokenizer(prompt.body, add_special_tokens=False)["input_ids"])
        prefix = self.tokenize(prompt.prefix, add_special=True) if prompt.prefix else []
        return prefix, self.tokenize(prompt.body, add_special=not prefix)

    def tokenize_prompt(self, prompt: RenderedPrompt) -> list[int]:
        prefix, body = self._split(prompt)
        return prefix + body

    def template_text(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) or None

    def chat_prompt(self, messages: list[dict[str, str]], *, shared: int = 0) -> RenderedPrompt:
        """``messages`` in the tokenizer's chat template, ending where the answer begins; the first
        ``shared`` messages as the cacheable prefix (see :func:`with_shared_head`)."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ChatTemplateError(f"{self.name} has no chat template in its tokenizer (is it a base model?)")
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        head = self.tokenizer.apply_chat_template(messages[:shared], tokenize=False) if shared else None
        return with_shared_head(text, head)

    # --- what the engine uses ----------------------------------------------------------------

    def forward(self, input_ids, cache: Any, attention_mask, position_ids):
        """Logits of the last position of each row, the rows' key-value cache extended in place."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                         logits_to_keep=1, **{self._cache_arg: cache})  # fmt: skip
        return out.logits

    def prefix_cache(self, prefix: list[int]) -> Any:
        """The key-value cache of ``prefix`` (every layer in full, sliding-window ones too), computed once."""
        from transformers import DynamicCache

        key = tuple(prefix)
        hit = self._prefix_cache.get(key)
        if hit is None:
            hit = DynamicCache()
            if prefix:
                ids = self.torch.tensor([prefix], device=self.device)
                self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_arg: hit})
            self._prefix_cache[key] = hit
            while len(self._prefix_cache) > self.max_prefixes:
                self._prefix_cache.popitem(last=False)
        self._prefix_cache.move_to_end(key)
        return hit

    def batched_prefix(self, prefix: Any, offsets: list[int]) -> Any:
        """A cache of ``len(offsets)`` rows: row i is ``offsets[i]`` masked-out zeros, then the prefix's
        first ``len(prefix) - offsets[i]`` positions."""
        from transformers import DynamicCache

        torch = self.torch
        batched = DynamicCache()
        for index, layer in enumerate(getattr(prefix, "layers", [])):
            if not layer.is_initialized or layer.keys is None or layer.keys.numel() == 0:
                continue
            size = layer.keys.shape[-2]
            keys, values = [], []
            for offset in offsets:
                shape = (1, layer.keys.shape[1], offset, layer.keys.shape[3])
                keys.append(torch.cat([layer.keys.new_zeros(shape), layer.keys[:, :, : size - offset]], dim=2))
                values.append(torch.cat([layer.values.new_zeros(shape), layer.values[:, :, : size - offset]], dim=2))
            batched.update(torch.cat(keys), torch.cat(values), index)
        return batched

    @property
    def pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    def processors(self, sampling: Sampling):
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        chain = LogitsProcessorList()
        if sampling.repetition_penalty != 1.0:
            chain.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
        if sampling.temperature > 0:
            chain.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k:
                chain.append(TopKLogitsWarper(sampling.top_k))
            if sampling.top_p < 1.0:
                chain.append(TopPLogitsWarper(sampling.top_p))
        return chain

    def rest(self, produced: list[int], shown: str) -> str:
        """Whatever of the decoded answer has not been streamed yet."""
        text = self.tokenizer.decode(produced, skip_special_tokens=True)
        return text[len(shown) :] if text.startswith(shown) else ""

    # --- scoring -----------------------------------------------------------------------------

    def _logit_rows(self, ids: list[int], start: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, float32 logits rows predicting them): one pass, in chunks that reuse the cache."""
        torch = self.torch
        cache = None
        with self.engine.paused():
            for begin in range(0, len(ids) - 1, SCORE_CHUNK):
                chunk = ids[begin : begin + SCORE_CHUNK]
                with torch.inference_mode():
                    out = self.model(input_ids=torch.tensor([chunk], device=self.device), use_cache=True,
                                     **{self._cache_arg: cache})  # fmt: skip
                    logits, cache = out.logits[0], getattr(out, "cache", None) or out.past_key_values
                    positions = np.arange(begin, begin + len(chunk)) + 1
                    keep = (positions >= start) & (positions < len(ids))
                    if not keep.any():
                        continue
                    rows = logits[torch.as_tensor(keep, device=logits.device)].float().cpu().numpy()
                yield positions[keep], rows

    def score_batch(self, sequences: list[list[int]], *, starts: list[int], top_k: int = 5) -> list[TokenScores]:
        """``score`` for several sequences at once: right-padded, one forward per chunk of positions."""
        torch = self.torch
        seqs = [check_score_request(s, start, self.context_length) for s, start in zip(sequences, starts)]
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            input_ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        parts: list[list[tuple[np.ndarray, ...]]] = [[] for _ in seqs]
        cache = None
        with self.engine.paused(), torch.inference_mode():
            for begin in range(0, width - 1, SCORE_CHUNK):
                end = min(begin + SCORE_CHUNK, width)
                out = self.model(input_ids=input_ids[:, begin:end], attention_mask=mask[:, :end], use_cache=True,
                                 **{self._cache_arg: cache})  # fmt: skip
                cache = getattr(out, "cache", None) or out.past_key_values
                positions = np.arange(begin, end) + 1
                for row, s in enumerate(seqs):
                    keep = (positions >= starts[row]) & (positions < len(s))
                    if keep.any():
                        targets = np.asarray(s)[positions[keep]]
                        logits = out.logits[row][torch.as_tensor(keep, device=self.device)].float().cpu().numpy()
                        parts[row].append((targets, *scores_from_logits(logits, targets, top_k)))
        return [TokenScores(*[np.concatenate(column) for column in zip(*p)]) for p in parts]

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def close(self) -> None:
        self.engine.close()
        self._prefix_cache.clear()
