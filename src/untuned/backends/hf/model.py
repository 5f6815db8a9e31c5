"""A transformers model as the batching engine and the backend both use it: the loaded model and
tokenizer on their device, one forward step over a batch, the URIAL prefix's key-value cache
(computed once, laid into a batch), and the pieces of sampling and decoding the engine needs."""

from __future__ import annotations

import inspect
from collections import OrderedDict
from pathlib import Path
from typing import Any

from untuned.backends.protocol import Sampling, is_greedy
from untuned.errors import BackendUnavailableError, ModelLoadError, ModelNotFoundError


def _import_torch():
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise BackendUnavailableError(
            "the transformers backend needs the optional extra: pip install 'untuned[hf]' (torch and transformers)"
        ) from exc
    return torch, transformers


class LoadedModel:
    """A causal LM and its tokenizer loaded with transformers (see the module docstring)."""

    def __init__(self, source: str | Path, *, gguf_file: str | None, device: str, dtype: str, from_hub: bool) -> None:
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
        self.cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.eos_ids = self._eos_ids()
        self.n_logits = int(self.model.config.vocab_size)  # the width of a logits row
        self.prefixes: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.max_prefixes = 4

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id if self.model.generation_config else None
        if ids is None:
            ids = self.tokenizer.eos_token_id
        if ids is None:
            return set()
        return {int(i) for i in ids} if isinstance(ids, (list, tuple)) else {int(ids)}

    def piece(self, token: int) -> bytes:
        """The bytes of one token, as far as the tokenizer can tell them apart."""
        return self.tokenizer.decode([token], skip_special_tokens=True).encode("utf-8")

    def forward(self, input_ids, cache: Any, attention_mask, position_ids):
        """Logits of the last position of each row, the rows' key-value cache extended in place."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_arg: cache},
        )
        return out.logits

    def prefix_cache(self, prefix: list[int]) -> Any:
        """The key-value cache of ``prefix`` (every layer in full, sliding-window ones too), computed once."""
        from transformers import DynamicCache

        key = tuple(prefix)
        hit = self.prefixes.get(key)
        if hit is None:
            hit = DynamicCache()
            if prefix:
                ids = self.torch.tensor([prefix], device=self.device)
                self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self.cache_arg: hit})
            self.prefixes[key] = hit
            while len(self.prefixes) > self.max_prefixes:
                self.prefixes.popitem(last=False)
        self.prefixes.move_to_end(key)
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
        if sampling.logit_bias:
            chain.append(self._biased(sampling.logit_bias))
        if not is_greedy(sampling.temperature):
            chain.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k:
                chain.append(TopKLogitsWarper(sampling.top_k))
            if sampling.top_p < 1.0:
                chain.append(TopPLogitsWarper(sampling.top_p))
        return chain

    def _biased(self, bias: tuple[tuple[int, float], ...]):
        """A logits processor adding ``bias`` (OpenAI's logit_bias) to those tokens' scores."""
        torch = self.torch
        ids = torch.tensor([t for t, _ in bias], device=self.device)
        values = torch.tensor([b for _, b in bias], device=self.device)

        def add(input_ids, scores):
            return scores.index_add(1, ids, values.to(scores.dtype).expand(scores.shape[0], -1))

        return add

    def rest(self, produced: list[int], shown: str) -> str:
        """Whatever of the decoded answer has not been streamed yet."""
        text = self.tokenizer.decode(produced, skip_special_tokens=True)
        return text[len(shown) :] if text.startswith(shown) else ""
