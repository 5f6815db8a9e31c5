"""Hugging Face transformers backend (optional extra ``untuned[hf]``): hub ids, local folders, GGUF files.

The URIAL prefix's past key values are computed once and copied for each query, so only the
query and the answer are run through the model. Runs on CPU or CUDA.
"""

from __future__ import annotations

import copy
import inspect
import logging
import threading
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
from untuned.conversation import RenderedPrompt
from untuned.errors import BackendUnavailableError, ContextOverflowError, ModelLoadError, ModelNotFoundError

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
    """A causal LM loaded with transformers. Thread-safe: one generation or scoring at a time."""

    def __init__(
        self,
        source: str | Path,
        *,
        gguf_file: str | None = None,
        device: str = "auto",
        n_ctx: int | None = None,
        name: str | None = None,
        from_hub: bool = False,
    ) -> None:
        torch, transformers = _import_torch()
        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
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
        self._lock = threading.RLock()
        self._prefix_cache: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.max_prefixes = 4

    @classmethod
    def from_spec(cls, spec: ModelSpec, options: LoadOptions) -> TransformersBackend:
        common = {"device": options.device, "n_ctx": options.n_ctx}
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

    # --- generation --------------------------------------------------------------------------

    def stream(self, prompt: RenderedPrompt, sampling: Sampling) -> Iterator[StreamChunk]:
        prefix = self.tokenize(prompt.prefix, add_special=True)
        body = self.tokenize(prompt.body)
        if not prefix:
            prefix, body = body[:1], body[1:]
        total = len(prefix) + len(body)
        if self.context_length is not None and total >= self.context_length:
            raise ContextOverflowError(total, self.context_length)
        return self._generate(prefix, body, sampling)

    def _forward(self, ids: list[int], cache: Any):
        tensor = self.torch.tensor([ids], device=self.device)
        # transformers 5.x renamed past_key_values to cache; accept both generations of the API
        out = self.model(input_ids=tensor, use_cache=True, **{self._cache_arg: cache})
        return out.logits[0], getattr(out, "cache", None) or out.past_key_values

    def _prefix_state(self, prefix: list[int]) -> tuple[Any, Any]:
        """Past key values and last logits after ``prefix``, computed once per prefix."""
        key = tuple(prefix)
        hit = self._prefix_cache.get(key)
        if hit is None:
            logits, cache = self._forward(prefix, None)
            hit = (cache, logits[-1])
            self._prefix_cache[key] = hit
            while len(self._prefix_cache) > self.max_prefixes:
                self._prefix_cache.popitem(last=False)
        self._prefix_cache.move_to_end(key)
        return copy.deepcopy(hit[0]), hit[1]

    def _processors(self, sampling: Sampling):
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

    def _generate(self, prefix: list[int], body: list[int], sampling: Sampling) -> Iterator[StreamChunk]:
        torch = self.torch
        limit = min(sampling.max_tokens, (self.context_length or 0) - len(prefix) - len(body))
        with self._lock, torch.inference_mode():
            yield StreamChunk("", tokens=0, prompt_tokens=len(prefix) + len(body))
            cache, logits = self._prefix_state(prefix)
            if body:
                step_logits, cache = self._forward(body, cache)
                logits = step_logits[-1]
            history = torch.tensor([prefix + body], device=self.device)
            chain = self._processors(sampling)
            generator = torch.Generator(device=self.device)
            generator.manual_seed(sampling.seed if sampling.seed is not None else int(torch.seed() % 2**31))
            produced: list[int] = []
            shown = ""
            for step in range(limit):
                scores = chain(history, logits[None, :].float())
                if sampling.temperature > 0:
                    probs = torch.softmax(scores, dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=generator)[0, 0])
                else:
                    token = int(scores.argmax(dim=-1)[0])
                if token in self.eos_ids:
                    yield StreamChunk(self._rest(produced, shown), tokens=0, finish="stop")
                    return
                produced.append(token)
                if step == limit - 1:
                    yield StreamChunk(self._rest(produced, shown), finish="length")
                    return
                text = self.tokenizer.decode(produced, skip_special_tokens=True)
                # hold back an incomplete multi-byte character until a later token completes it
                delta = "" if text.endswith("\ufffd") or not text.startswith(shown) else text[len(shown) :]
                shown += delta
                yield StreamChunk(delta)
                history = torch.cat([history, torch.tensor([[token]], device=self.device)], dim=1)
                step_logits, cache = self._forward([token], cache)
                logits = step_logits[-1]

    def _rest(self, produced: list[int], shown: str) -> str:
        """Whatever of the decoded answer has not been streamed yet."""
        text = self.tokenizer.decode(produced, skip_special_tokens=True)
        return text[len(shown) :] if text.startswith(shown) else ""

    # --- scoring -----------------------------------------------------------------------------

    def _logit_rows(self, ids: list[int], start: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, float32 logits rows predicting them): one pass, in chunks that reuse the cache."""
        torch = self.torch
        cache = None
        with self._lock:
            for begin in range(0, len(ids) - 1, SCORE_CHUNK):
                chunk = ids[begin : begin + SCORE_CHUNK]
                with torch.inference_mode():
                    logits, cache = self._forward(chunk, cache)
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
        with self._lock, torch.inference_mode():
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

    def close(self) -> None:
        self._prefix_cache.clear()
