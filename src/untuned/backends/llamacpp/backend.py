"""The llama.cpp backend (GGUF files, the default): generation through the batching engine,
teacher-forced scoring in a free slot of the same context."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from untuned.backends import (
    DEFAULT_MAX_CTX,
    LoadOptions,
    ModelSpec,
    RowScoring,
    Sampling,
    StreamChunk,
    check_score_request,
    default_gguf_path,
)
from untuned.backends.llamacpp.devices import CpuOverrides, experts_in_ram
from untuned.backends.llamacpp.draft import PROMPT_LOOKUP, DraftModel, PromptLookup
from untuned.backends.llamacpp.engine import EXACT_ROWS, LlamaEngine
from untuned.backends.llamacpp.native import FedSequence, NativeModel, attention_choice, check_gguf_file, default_threads
from untuned.backends.llamacpp.prefix_store import PrefixStore, default_folder, model_identity, pin_plan, pinned_plan
from untuned.backends.protocol import LLAMA_CPP_OPTIONS, EngineStats
from untuned.backends.scoring import target_logprobs
from untuned.chat_template import render_chat_template, with_shared_head
from untuned.constraint import Constrained
from untuned.conversation import RenderedPrompt
from untuned.errors import ChatTemplateError, ContextOverflowError, ModelLoadError
from untuned.placement import engine_window
from untuned.placement.fit import Settings


class LlamaCppBackend(RowScoring):
    """A GGUF model in llama.cpp. Thread-safe; ``slots`` requests are decoded together.

    ``n_ctx`` is the context window of each sequence (default: the model's, at most 8192).
    ``prefixes`` is how many URIAL prefixes stay evaluated at once (least recently used evicted).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int | None = None,
        threads: int | None = None,
        name: str | None = None,
        slots: int = 1,
        prefixes: int = 2,
        reuse_prefix: bool = True,
        gpu_layers: int | str = 0,
        cpu_moe: int | str = 0,
        kv_budget: int | None = None,
        batch_invariant: bool = False,
        kv_type: str = "f16",
        flash_attn: str = "auto",
        prefix_cache: bool = False,
        prefix_cache_gib: float = 4.0,
        draft: str | None = None,
    ) -> None:
        path = Path(path).expanduser()
        check_gguf_file(path)  # a clear error before anything reads the file
        flash = attention_choice(kv_type, flash_attn)
        planned = Settings(n_ctx or DEFAULT_MAX_CTX, slots, prefixes, kv_type, flash, kv_budget)
        pin = _pin_key(path, planned, n_ctx) if prefix_cache and "auto" in (gpu_layers, cpu_moe) else None
        drafted = draft if draft != PROMPT_LOOKUP else None  # a draft model's memory is planned first
        self.gpu_layers, self.cpu_moe, self.plan = self._placement(path, gpu_layers, cpu_moe, planned, n_ctx, pin, drafted)
        pattern = experts_in_ram(self.cpu_moe)
        self.model = NativeModel(path, gpu_layers=self.gpu_layers, overrides=CpuOverrides(pattern) if pattern else None)
        self.path = path
        self.name = name or path.name
        limit = int(prefix_cache_gib * 2**30)
        store = self._store(path, kv_type, flash_attn, kv_budget, limit) if prefix_cache and reuse_prefix else None
        window = engine_window(n_ctx, self.model.n_ctx_train)  # the rule the plan uses
        options = {
            "n_ctx_seq": window,
            "threads": threads or default_threads(),
            "slots": slots,
            "prefixes": prefixes,
            "keep_prefixes": reuse_prefix,
            "kv_budget": kv_budget,
            "max_rows": EXACT_ROWS if batch_invariant else None,
            "kv_type": kv_type,
            "flash_attn": flash_attn,
            "store": store,
        }
        self.engine = self._start_engine(draft, options)
        if pin and self.plan is not None:  # loaded: this placement is the one later loads keep while it fits
            pin_plan(default_folder(), pin, (self.gpu_layers, self.cpu_moe))
        self.context_length: int | None = self.engine.n_ctx_seq
        self.parallel = slots
        self.vocab_size = self.model.n_vocab
        self._prefix_ids: dict[str, list[int]] = {}

    def _start_engine(self, draft: str | None, options: dict) -> LlamaEngine:
        """The engine over the loaded model, with its drafter (``--draft``); the models are closed if it fails."""
        drafter = None
        try:
            drafter = _drafter(draft, self.model, options)
            return LlamaEngine(self.model, drafter=drafter, **options)
        except BaseException:
            if drafter is not None:
                drafter.close()
            self.model.close()
            raise

    def _store(self, path: Path, kv_type: str, flash_attn: str, kv_budget: int | None, limit: int) -> PrefixStore:
        """The disk store of this model's evaluated prefixes under these load options (what changes the numbers)."""
        settings = {
            "kv_type": kv_type,
            "flash_attn": attention_choice(kv_type, flash_attn),
            "pool": kv_budget is not None,
            "gpu_layers": self.gpu_layers,
            "cpu_moe": self.cpu_moe,
            "batch": 512,
            "llama.cpp": self.model.build,
        }
        return PrefixStore(default_folder(), model=path, settings=settings, limit_bytes=limit)

    @staticmethod
    def _placement(
        path: Path,
        gpu_layers: int | str,
        cpu_moe: int | str,
        settings: Settings,
        n_ctx: int | None,
        pin: str | None,
        draft: str | None,
    ):
        """``auto`` layers and experts as planned for the GPU's free memory (nothing offloaded on a CPU build); with
        the prefix cache on, the first load's choice is recorded beside it and kept while it still fits."""
        from untuned.backends.llamacpp.devices import gpu_free_memory
        from untuned.backends.llamacpp.native import import_llama_cpp
        from untuned.placement import placement

        check_gguf_file(path)
        vram = gpu_free_memory() if import_llama_cpp().llama_supports_gpu_offload() else 0
        pinned = pinned_plan(default_folder(), pin) if pin else None
        return placement(path, gpu_layers, cpu_moe, settings, vram=vram, n_ctx=n_ctx, pinned=pinned, draft=draft)

    @classmethod
    def from_spec(cls, spec: ModelSpec, options: LoadOptions) -> LlamaCppBackend:
        options = options.narrow(LLAMA_CPP_OPTIONS, "llama.cpp")  # type: ignore[assignment]
        common = {
            "n_ctx": options.n_ctx,
            "threads": options.threads,
            "slots": options.parallel,
            "gpu_layers": options.gpu_layers,
            "cpu_moe": options.cpu_moe,
            "kv_budget": options.kv_budget,
            "batch_invariant": options.batch_invariant,
            "kv_type": options.kv_type,
            "flash_attn": options.flash_attn,
            "prefix_cache": options.prefix_cache,
            "prefix_cache_gib": options.prefix_cache_gib,
            "draft": options.draft,
        }
        path, name = gguf_file(spec)
        return cls(path, name=name, **common)

    # --- tokens ------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return self.model.tokenize(text, add_special=add_special)

    def piece(self, token: int) -> bytes:
        return self.model.piece(int(token))

    def encode_text(self, text: str) -> list[int]:
        return self.model.tokenize(text, add_special=True, parse_special=True)

    def end_text(self) -> str:
        return self.model.bos_eos()[1]

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens``; ValueError naming an id outside the vocabulary (llama.cpp would abort on it)."""
        ids = [int(t) for t in tokens]
        self.model.check_ids(ids, "tokens")
        return b"".join(self.model.piece(t) for t in ids).decode("utf-8", "replace")

    def _prefix(self, text: str, *, special: bool = False) -> list[int]:
        ids = self._prefix_ids.get((text, special))
        if ids is None:
            if len(self._prefix_ids) >= 16:
                self._prefix_ids.clear()
            ids = self._prefix_ids[text, special] = (
                self.model.tokenize(text, add_special=False, parse_special=True)
                if special
                else self.tokenize(text, add_special=True)
            )
        return ids

    # --- generation --------------------------------------------------------------------------

    def chat_prompt(self, messages: list[dict[str, str]], *, shared: int = 0) -> RenderedPrompt:
        """``messages`` in the chat template of the GGUF's metadata, ending where the answer begins; the
        first ``shared`` messages as the cacheable prefix (see :func:`with_shared_head`)."""
        template = self.model.chat_template()
        if template is None:
            raise ChatTemplateError(f"{self.name} has no chat template in its GGUF metadata (is it a base model?)")
        bos, eos = self.model.bos_eos()
        text = render_chat_template(template, messages, bos_token=bos, eos_token=eos)
        head = None
        if shared:
            head = render_chat_template(template, messages[:shared], bos_token=bos, eos_token=eos, add_generation_prompt=False)
        return with_shared_head(text, head)

    def template_text(self) -> str | None:
        return self.model.chat_template()

    @property
    def kv_summary(self) -> str:
        """The KV cache's layout and the memory the context took, for a start-up line."""
        engine = self.engine
        megabytes = engine.ctx.memory_bytes / 2**20
        if engine.kv_budget is not None:
            rounded = (
                f" ({engine.requested_kv_budget} rounded up to llama.cpp's blocks of 256)"
                if (engine.requested_kv_budget != engine.kv_budget)
                else ""
            )
            layout = f"one pool of {engine.kv_budget} tokens{rounded} shared by {engine.slots} slots and the prefixes"
        else:
            layout = f"{engine.slots} slots and {len(engine._prefix_seqs)} prefixes, {engine.n_ctx_seq} tokens each"
        return f"KV cache: {layout}; context memory {megabytes:.0f} MB"

    def check_constraint(self, *, json_schema: str | None = None, grammar: str | None = None) -> None:
        """Refuse (ConstraintError, naming the construct) a JSON schema or grammar llguidance cannot enforce, or
        that no output can match; compiled once and kept for the requests that use it."""
        constrained = Constrained.of(json_schema=json_schema, grammar=grammar)
        if constrained is not None:
            self.engine.constraints.matcher(constrained)

    def _split(self, prompt: RenderedPrompt) -> tuple[list[int], list[int]]:
        """The prompt's token ids: the cacheable prefix and the body."""
        if prompt.ids is not None:
            return [], list(prompt.ids)
        prefix = self._prefix(prompt.prefix, special=prompt.special_tokens) if prompt.prefix else []
        if prompt.special_tokens:
            return prefix, self.model.tokenize(prompt.body, add_special=False, parse_special=True)
        return prefix, self.tokenize(prompt.body, add_special=not prefix)

    def tokenize_prompt(self, prompt: RenderedPrompt) -> list[int]:
        prefix, body = self._split(prompt)
        return prefix + body

    def stream(self, prompt: RenderedPrompt, sampling: Sampling) -> Iterator[StreamChunk]:
        prefix, body = self._split(prompt)
        total = len(prefix) + len(body)
        if total >= self.engine.n_ctx_seq:
            raise ContextOverflowError(total, self.engine.n_ctx_seq)
        limit = min(sampling.max_tokens, self.engine.n_ctx_seq - total)
        return self.engine.generate(prefix, body, sampling, limit)

    # --- scoring -----------------------------------------------------------------------------

    def _logit_rows(self, ids: list[int], start: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, raw logits rows predicting them): one teacher-forced pass in chunks of ``n_batch``,
        in a free slot. Each rows array is a view into llama.cpp's buffer, valid until the next chunk."""
        with self.engine.exclusive() as (ctx, batch, seq):
            for begin in range(0, len(ids) - 1, batch.capacity):
                chunk = ids[begin : begin + batch.capacity]
                # row r predicts the token at begin + r + 1; only rows that predict a scored position
                # ask for logits (a 262k-wide output row is costly)
                positions = np.arange(begin, begin + len(chunk)) + 1
                wanted = (positions >= start) & (positions < len(ids))
                batch.clear()
                batch.add(chunk, begin, seq, wanted)
                ctx.decode(batch)
                outputs = positions[wanted]
                if not len(outputs):
                    continue
                logits = ctx.logits(len(outputs))
                for row in range(0, len(outputs), SCORE_ROWS):
                    yield outputs[row : row + SCORE_ROWS], logits[row : row + SCORE_ROWS]

    @contextmanager
    def scoring_session(self) -> Iterator[Callable[[Sequence[int], int], np.ndarray]]:
        """A function of (ids, start) giving the log-probability of each of ``ids[start:]``, in a slot held for the
        session whose cells are kept from call to call: a call evaluates only what follows the longest common
        prefix of its ids and the previous call's, from the chunk (``n_batch`` tokens) that prefix ends in (prompts
        that extend one another: ``untuned curve``). A model with sliding-window layers (Gemma) reuses only where
        the new prompt extends the last one: its window's cache keeps no tokens that later ones have displaced, so
        going back would attend over less. The session holds one of the engine's slots until it ends: other
        scoring on this backend waits for it."""
        sliding = self.model.lib.llama_model_n_swa(self.model.model) > 0
        with self.engine.exclusive() as (ctx, batch, seq):
            sequence = FedSequence(ctx, seq)

            def logprobs(tokens: Sequence[int], start: int) -> np.ndarray:
                ids = check_score_request(tokens, start, self.context_length, self.vocab_size)
                # the row predicting ids[start] needs ids[start - 1] fed; kept cells end on a chunk boundary, so the
                # chunks evaluated are the ones a fresh pass evaluates, and the numbers are the same to the bit; a
                # sliding window's cells before the cut may hold later tokens now: there, no going back
                keep = sequence.rewind(ids, start - 1, align=batch.capacity, back=not sliding)
                found, every = [], np.asarray(ids)
                for begin in range(keep, len(ids) - 1, batch.capacity):
                    chunk = ids[begin : min(begin + batch.capacity, len(ids) - 1)]
                    positions = np.arange(begin, begin + len(chunk)) + 1  # row r predicts the token at begin + r + 1
                    wanted = positions >= start
                    sequence.feed(batch, chunk, wanted)
                    targets = every[positions[wanted]]
                    rows = ctx.logits(int(wanted.sum()))
                    for row in range(0, len(targets), SCORE_ROWS):
                        found.append(target_logprobs(rows[row : row + SCORE_ROWS], targets[row : row + SCORE_ROWS]))
                return np.concatenate(found) if found else np.zeros(0, dtype=np.float32)

            yield logprobs

    def stats(self) -> EngineStats:
        """The batching engine's load and counters."""
        return self.engine.stats()

    @property
    def batch_invariant(self) -> bool:
        """Whether at most EXACT_ROWS requests are decoded per step, each then getting exactly its answer
        alone (see the engine); settable at any time, it holds from the next step."""
        return self.engine.max_rows is not None

    @batch_invariant.setter
    def batch_invariant(self, on: bool) -> None:
        self.engine.max_rows = EXACT_ROWS if on else None

    def close(self) -> None:
        self.engine.close()
        self.model.close()


def gguf_file(spec: ModelSpec) -> tuple[Path, str | None]:
    """The local GGUF file ``spec`` names (the bundled default, a path, hf:org/repo:QUANT fetched) and its display
    name (None: the file's own)."""
    if spec.kind == "default":
        return default_gguf_path(), "gemma-3-270m-base"
    if spec.kind == "hub-gguf":
        from untuned import hub

        gguf = hub.parse(spec.location)
        return hub.fetch(gguf), gguf.spec
    if spec.kind != "gguf":
        raise ModelLoadError(
            f"the llama.cpp backend reads .gguf files; {spec.location!r} is not one (try --backend transformers)."
        )
    return Path(spec.location), None


def _drafter(draft: str | None, model: NativeModel, options: dict):
    """The drafter ``draft`` names (see :mod:`.draft`): prompt lookup, or a GGUF model loaded whole on the GPU (when
    llama.cpp has one) that must share ``model``'s vocabulary, one sequence per slot of the engine (``options``)."""
    if draft is None:
        return None
    if draft == PROMPT_LOOKUP:
        return PromptLookup()
    path, _ = gguf_file(ModelSpec.parse(draft))
    small = NativeModel(path, gpu_layers=-1 if model.lib.llama_supports_gpu_offload() else 0)
    try:
        return DraftModel(
            small,
            model,
            n_seq=options["slots"],
            **{name: options[name] for name in ("n_ctx_seq", "threads", "kv_type", "flash_attn")},
        )
    except BaseException:
        small.close()
        raise


SCORE_ROWS = 64  # logits rows turned into scores at a time: 64 x 262k floats = 64 MiB


def _pin_key(path: Path, settings: Settings, n_ctx: int | None) -> str:
    """What a pinned placement is kept under: the file's content identity (not its name) and the options."""
    options = json.dumps({"settings": dataclasses.asdict(settings), "n_ctx": n_ctx}, sort_keys=True)
    return hashlib.sha256(f"{model_identity(path)}:{options}".encode()).hexdigest()[:32]
