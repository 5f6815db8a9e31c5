"""Hugging Face transformers backend (optional extra ``untuned[hf]``): hub ids, local folders, GGUF files,
on CPU or CUDA. The URIAL prefix's key-value cache is computed once and laid into each batch of
answers, so only the queries and the answers run through the model."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

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
from untuned.backends.hf.engine import TransformersEngine
from untuned.backends.hf.model import LoadedModel
from untuned.backends.protocol import TRANSFORMERS_OPTIONS, EngineStats
from untuned.chat_template import with_shared_head
from untuned.constraint import Constrained
from untuned.conversation import RenderedPrompt
from untuned.errors import (
    ChatTemplateError,
    ContextOverflowError,
    InvalidInput,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedOperation,
)

log = logging.getLogger(__name__)
SCORE_CHUNK = 64  # positions per forward step when scoring: 64 x vocab logits at a time


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
        self.lm = lm = LoadedModel(source, gguf_file=gguf_file, device=device, dtype=dtype, from_hub=from_hub)
        self.torch, self.device, self.dtype, self.tokenizer, self.model = lm.torch, lm.device, lm.dtype, lm.tokenizer, lm.model
        self._cache_arg, self.eos_ids = lm.cache_arg, lm.eos_ids
        self.vocab_size = int(lm.model.config.vocab_size)
        self.name = name or (Path(str(source)).name if not from_hub else str(source))
        if gguf_file:
            self.name = Path(gguf_file).name
        trained = getattr(lm.model.config, "max_position_embeddings", None) or DEFAULT_MAX_CTX
        self.context_length: int | None = n_ctx or min(int(trained), DEFAULT_MAX_CTX)
        self.parallel = slots
        self.engine = TransformersEngine(lm, slots=slots)

    @property
    def _prefix_cache(self):  # the prefix caches the engine keeps (tests clear it)
        return self.lm.prefixes

    @classmethod
    def from_spec(cls, spec: ModelSpec, options: LoadOptions) -> TransformersBackend:
        options = options.narrow(TRANSFORMERS_OPTIONS, "transformers")  # type: ignore[assignment]
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

    # --- tokens ----------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return ([bos] if add_special and bos is not None else []) + list(ids)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def end_text(self) -> str:
        return self.tokenizer.eos_token or ""

    def piece(self, token: int) -> bytes:
        return self.lm.piece(token)

    # --- generation --------------------------------------------------------------------------

    def check_constraint(self, *, json_schema: str | None = None, grammar: str | None = None) -> None:
        """Refuse (ConstraintError) a JSON schema or grammar llguidance cannot enforce, or that no output matches."""
        constrained = Constrained.of(json_schema=json_schema, grammar=grammar)
        if constrained is not None:
            self.engine.constraints.matcher(constrained)

    def stream(self, prompt: RenderedPrompt, sampling: Sampling) -> Iterator[StreamChunk]:
        if sampling.ignore_eos:
            raise UnsupportedOperation("the transformers backend does not support ignore_eos; use a GGUF with llama.cpp")
        wrong = next((t for t, _ in sampling.logit_bias if t >= self.vocab_size), None)
        if wrong is not None:
            raise InvalidInput(f"logit_bias: token id {wrong} is outside the vocabulary (0-{self.vocab_size - 1})")
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

    # --- scoring -----------------------------------------------------------------------------

    def _logit_rows(self, ids: list[int], start: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, float32 logits rows predicting them): one pass, in chunks that reuse the cache."""
        torch = self.torch
        cache = None
        with self.engine.paused():
            for begin in range(0, len(ids) - 1, SCORE_CHUNK):
                chunk = ids[begin : begin + SCORE_CHUNK]
                with torch.inference_mode():
                    out = self.model(
                        input_ids=torch.tensor([chunk], device=self.device), use_cache=True, **{self._cache_arg: cache}
                    )
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
        seqs = [check_score_request(s, start, self.context_length, self.vocab_size) for s, start in zip(sequences, starts)]
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
                out = self.model(
                    input_ids=input_ids[:, begin:end], attention_mask=mask[:, :end], use_cache=True, **{self._cache_arg: cache}
                )
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
